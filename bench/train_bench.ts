/**
 * Training throughput of the two gradient engines on the default `deno task train`
 * shape (d_model 256, 4 layers, SwiGLU 768, vocabulary 4096): one batch of 2 windows of
 * 128 tokens per iteration, gradients of every weight included.
 */
import { GpuContext } from "../src/gpu/device.ts";
import type { ModelConfig } from "../src/model/config.ts";
import { GpuGradientEngine } from "../src/train/gpu_gradient_engine.ts";
import { ReferenceGradientEngine } from "../src/train/gradient_engine.ts";
import { initParams } from "../src/train/trainer.ts";

const CONFIG: ModelConfig = {
  architecture: "llama",
  dim: 256,
  hiddenDim: 768,
  nLayers: 4,
  nHeads: 4,
  nKvHeads: 4,
  headDim: 64,
  vocabSize: 4096,
  maxSeqLen: 128,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropeStyle: "half",
  tiedEmbeddings: true,
  qkvBias: false,
};
const params = initParams(CONFIG, 1);
const batch = [0, 1].map((b) =>
  Int32Array.from({ length: 128 }, (_, t) => (b * 977 + t * 131) % CONFIG.vocabSize)
);

const reference = await ReferenceGradientEngine.create(CONFIG, params);
Deno.bench({
  name: "reference engine: 2 x 128 tokens, all gradients",
  group: "train",
  n: 2,
  warmup: 1,
}, async () => {
  await reference.gradients(batch);
});

const gpu = await GpuContext.create();
const engine = await GpuGradientEngine.create(gpu, CONFIG, params);
Deno.bench({
  name: "WebGPU engine: 2 x 128 tokens, all gradients",
  group: "train",
  baseline: true,
  n: 4,
  warmup: 1,
}, async () => {
  await engine.gradients(batch);
});
Deno.bench({
  name: "WebGPU engine: setWeights of all 4.5 M parameters",
  group: "upload",
  n: 10,
  warmup: 1,
}, async () => {
  await engine.setWeights(params);
});
