/**
 * Calibration throughput (forward and backward pass plus the Fisher statistics of every
 * linear layer, per sequence) against forward-only throughput. Forward only is measured
 * two ways: the training-mode pass with `lossOnly` (same kernels, loss of every position,
 * no readback of logits) and the inference forward (GpuModel, all logits read back).
 *
 * Models: stories260K, and a synthetic model with SmolLM-135M widths (d_model 576, 9
 * query heads of 64 with 3 key/value heads, hidden 1536, vocab 49152), 2 blocks and
 * seeded random weights. Tokens per second are the tokens in the bench name divided by
 * the time per iteration. The ratio calibration / forward is the cost of the backward
 * pass and statistics, counted in forward passes.
 *
 *   deno bench -A bench/calibrate_bench.ts
 *
 * @module
 */
import { GpuContext } from "../src/gpu/device.ts";
import { GpuModel } from "../src/model/gpu_model.ts";
import { GpuBackward } from "../src/model/gpu_backward.ts";
import { ReferenceBackward } from "../src/model/reference_backward.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import type { ModelConfig } from "../src/model/config.ts";
import type { WeightStore } from "../src/model/model.ts";
import { FisherAccumulator } from "../src/calibrate/accumulator.ts";
import { CpuEngine, type GradientEngine } from "../src/calibrate/engine.ts";
import { GpuEngine } from "../src/calibrate/gpu_engine.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "../tests/_helpers.ts";

const gpu = await GpuContext.create();
const disposers: (() => void)[] = [];
globalThis.addEventListener("unload", () => {
  for (const dispose of disposers) dispose();
  gpu.destroy();
});

/** Deterministic token ids in [0, vocab), starting with BOS (id 1). */
function tokenIds(count: number, vocab: number): Int32Array {
  return Int32Array.from({ length: count }, (_, i) => (i === 0 ? 1 : (i * 7919 + 13) % vocab));
}

/** Registers forward-only and calibration benches of one model on the given engines. */
async function register(
  label: string,
  config: ModelConfig,
  weights: WeightStore,
  T: number,
  withReference: boolean,
): Promise<void> {
  const tokens = tokenIds(T, config.vocabSize);
  const group = `${label} ${T} tokens`;
  const counts = withReference ? { n: 5, warmup: 1 } : { n: 3, warmup: 1 };
  const acc = new FisherAccumulator(config, { fullG: false });

  const lm = await GpuModel.create(gpu, config, weights, { contextLength: T });
  disposers.push(() => lm.dispose());
  Deno.bench({ name: `${group}: forward (gpu)`, group, baseline: true, ...counts }, async () => {
    lm.reset();
    await lm.forward(tokens);
  });
  const pass = await GpuBackward.create(gpu, config, weights);
  disposers.push(() => pass.dispose());
  Deno.bench(
    { name: `${group}: forward loss only (gpu training pass)`, group, ...counts },
    async () => {
      await pass.run(tokens, { lossOnly: true });
    },
  );
  const engine: GradientEngine = await GpuEngine.create(gpu, config, weights, {
    fullG: false,
    ownsGpu: false,
  });
  disposers.push(() => engine.dispose());
  Deno.bench({ name: `${group}: calibrate (gpu)`, group, ...counts }, async () => {
    await engine.accumulate(tokens, acc, null);
  });

  if (!withReference) return;
  const ref = await ReferenceBackward.create(config, weights);
  Deno.bench({ name: `${group}: forward (reference f64)`, group, ...counts }, () => {
    ref.logits(tokens);
  });
  const cpu = await CpuEngine.create(config, weights);
  Deno.bench({ name: `${group}: calibrate (reference f64)`, group, ...counts }, async () => {
    await cpu.accumulate(tokens, acc, null);
  });
}

const stories = await loadLlama2c(STORIES_260K);
await register("stories260K", stories.config, stories.weights, 256, true);
stories.weights.close();

const synthetic = tinyConfig({
  dim: 576,
  hiddenDim: 1536,
  nLayers: 2,
  nHeads: 9,
  nKvHeads: 3,
  headDim: 64,
  vocabSize: 49152,
  maxSeqLen: 2048,
  ropeStyle: "half",
  tiedEmbeddings: true,
});
await register("synthetic 576x2", synthetic, randomWeights(synthetic, 1), 128, false);
