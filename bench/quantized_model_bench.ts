/**
 * Whole-model decode and prefill speed of a quantized model run from its codes against
 * the dense f32 model, on stories260K and on a synthetic model large enough to be
 * memory-bound (8 blocks of d_model 2048, hidden 5632).
 *
 * `deno run -A bench/quantized_model_bench.ts` prints a table with the GPU weight bytes
 * and the weight bytes read per second in decode; `deno bench -A
 * bench/quantized_model_bench.ts` runs the same measurements as benchmarks.
 *
 * The synthetic quantized model has random 8-bit indices into one f16 codebook of 256
 * 4-wide vectors per layer, about 2 bpw with per-row scales. Its values are meaningless,
 * but the work per weight is that of a real 2-bpw layer.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { GpuContext } from "../src/gpu/device.ts";
import { GpuModel } from "../src/model/gpu_model.ts";
import { loadModel } from "../src/model/load.ts";
import {
  BLOCK_LINEARS,
  expectedTensors,
  type ModelConfig,
  tensorNames,
} from "../src/model/config.ts";
import { MemoryWeightStore, type WeightStore } from "../src/model/model.ts";
import { type LayerDesc, writeQuantizedModel } from "../src/formats/quantized.ts";
import type { TensorToWrite } from "../src/formats/safetensors.ts";
import { quantizeModel } from "../src/quantize/quantize_model.ts";
import { randomVqLayer } from "../tests/_quantized_layers.ts";

const STORIES = fileURLToPath(new URL("../../shared/models/stories260K.bin", import.meta.url));
/** Prompt tokens of the prefill measurement. */
const PREFILL_TOKENS = 64;
/** Single-token steps of the decode measurement. */
const DECODE_STEPS = 8;

/** The memory-bound synthetic model: 1B-class widths, 8 blocks, a small vocabulary. */
const SYNTHETIC: ModelConfig = {
  architecture: "llama",
  dim: 2048,
  hiddenDim: 5632,
  nLayers: 8,
  nHeads: 16,
  nKvHeads: 4,
  headDim: 128,
  vocabSize: 4096,
  maxSeqLen: 256,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropeStyle: "half",
  tiedEmbeddings: false,
  qkvBias: false,
  bosId: 1,
};

/** Fills tensors with small uniform values from a 32-bit xorshift (fast for 1.6 GB). */
function syntheticDense(config: ModelConfig): WeightStore {
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  let state = 0x9e3779b9;
  for (const [name, shape] of expectedTensors(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const scale = shape.length === 2 ? 1 / Math.sqrt(shape[1]) : 0;
    for (let i = 0; i < data.length; i++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      data[i] = shape.length === 2 ? ((state >>> 0) / 4294967296 - 0.5) * 2 * scale : 1;
    }
    tensors.set(name, { shape, data });
  }
  return new MemoryWeightStore("synthetic", tensors);
}

/** Writes a quantized file of `config` with random 2-bpw VQ layers and the dense rest. */
async function syntheticQuantized(
  config: ModelConfig,
  dense: WeightStore,
  path: string,
): Promise<void> {
  const tensors: Record<string, TensorToWrite> = {};
  const layers: Record<string, LayerDesc> = {};
  const shapes = expectedTensors(config);
  let seed = 1;
  for (let l = 0; l < config.nLayers; l++) {
    for (const which of BLOCK_LINEARS) {
      const name = tensorNames.linear(l, which), prefix = name.replace(/\.weight$/, "");
      const [rows, cols] = shapes.get(name)!;
      const spec = {
        rows,
        cols,
        vectorLength: 4,
        channelOrder: false,
        groups: [{ rows, sizes: [256] }],
      };
      layers[prefix] = randomVqLayer(spec, seed++, prefix, tensors).layer;
    }
  }
  for (const name of dense.names()) {
    if (layers[name.replace(/\.weight$/, "")]) continue;
    const data = await dense.read(name);
    tensors[name] = { dtype: "F32", shape: dense.shape(name), data: new Uint8Array(data.buffer) };
  }
  await writeQuantizedModel(path, {
    config,
    layers,
    tensors,
    quantization: { method: "synthetic" },
  });
}

/** One model under test. */
interface Subject {
  label: string;
  lm: GpuModel;
}

async function timeSeconds(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/** Prefill PREFILL_TOKENS tokens from an empty cache. */
async function prefill(lm: GpuModel): Promise<void> {
  lm.reset();
  await lm.forward(Array.from({ length: PREFILL_TOKENS }, (_, i) => 1 + (i % 50)), {
    lastOnly: true,
  });
}

/** DECODE_STEPS single-token steps after a 4-token prompt. */
async function decode(lm: GpuModel): Promise<void> {
  lm.reset();
  await lm.forward([1, 2, 3, 4], { lastOnly: true });
  for (let i = 0; i < DECODE_STEPS; i++) await lm.forward([5 + i], { lastOnly: true });
}

async function buildSubjects(gpu: GpuContext, dir: string): Promise<Subject[]> {
  const stories = await loadModel(STORIES);
  const storiesQ = join(dir, "stories-2bit.safetensors");
  await quantizeModel(stories, null, {
    method: "kmeans",
    bits: 2,
    out: storiesQ,
    seed: 1,
    gpu: null,
    quiet: true,
  });
  const storiesQModel = await loadModel(storiesQ);

  const dense = syntheticDense(SYNTHETIC);
  const syntheticQ = join(dir, "synthetic-2bit.safetensors");
  await syntheticQuantized(SYNTHETIC, dense, syntheticQ);
  const syntheticQModel = await loadModel(syntheticQ);

  return [
    {
      label: "stories260K dense f32",
      lm: await GpuModel.create(gpu, stories.config, stories.weights),
    },
    {
      label: "stories260K kmeans 2 bpw",
      lm: await GpuModel.create(gpu, storiesQModel.config, storiesQModel.weights),
    },
    { label: "synthetic 8x2048 dense f32", lm: await GpuModel.create(gpu, SYNTHETIC, dense) },
    {
      label: "synthetic 8x2048 VQ 2 bpw",
      lm: await GpuModel.create(gpu, SYNTHETIC, syntheticQModel.weights),
    },
  ];
}

if (import.meta.main) {
  const gpu = await GpuContext.create();
  const dir = await Deno.makeTempDir();
  const subjects = await buildSubjects(gpu, dir);
  console.log(`adapter: ${gpu.adapterName}`);
  console.log(
    "| model | GPU weight MiB | prefill tokens/s | decode tokens/s | decode weight GB/s |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: |");
  for (const { label, lm } of subjects) {
    await decode(lm); // warm-up: pipelines compile on first use
    const prefillSeconds = Math.min(
      await timeSeconds(() => prefill(lm)),
      await timeSeconds(() => prefill(lm)),
    );
    const decodeSeconds = Math.min(
      await timeSeconds(() => decode(lm)),
      await timeSeconds(() => decode(lm)),
    );
    // The decode timing includes one 4-token prompt; it is small next to the steps.
    const decodeRate = DECODE_STEPS / decodeSeconds;
    const mib = lm.weightBytes / 2 ** 20;
    console.log(
      `| ${label} | ${mib.toFixed(2)} | ${(PREFILL_TOKENS / prefillSeconds).toFixed(1)} | ` +
        `${decodeRate.toFixed(2)} | ${(lm.weightBytes * decodeRate / 1e9).toFixed(2)} |`,
    );
  }
  for (const { lm } of subjects) lm.dispose();
  gpu.destroy();
  await Deno.remove(dir, { recursive: true });
} else {
  const gpu = await GpuContext.create();
  const subjects = await buildSubjects(gpu, await Deno.makeTempDir());
  for (const { label, lm } of subjects) {
    Deno.bench(
      `${label} prefill ${PREFILL_TOKENS} tokens`,
      { n: 3, warmup: 1 },
      async () => await prefill(lm),
    );
    Deno.bench(
      `${label} decode ${DECODE_STEPS} tokens`,
      { n: 3, warmup: 1 },
      async () => await decode(lm),
    );
  }
}
