/**
 * Decode (T = 1) and prefill (T = 64) time of quantized linear layers at about 2 bits per
 * weight against the dense f32 layer (src/ops/linear.ts), on memory-bound shapes.
 *
 * `deno bench -A bench/quantized_bench.ts` runs them as benchmarks. `deno run -A
 * bench/quantized_bench.ts` prints a table with weight bytes and achieved bytes per
 * second, counting only weight bytes because activations are negligible at these shapes.
 * With `--decode-only` the table skips prefill.
 * Each measurement records several products (REPS) into one batch and submits once, so
 * the per-submit round trip is spread over them.
 *
 * @module
 */
import { GpuContext } from "../src/gpu/device.ts";
import { type GpuMatrix, uploadMatrix } from "../src/ops/gpu_matrix.ts";
import { linear } from "../src/ops/linear.ts";
import { memoryTensors, QuantizedLinear } from "../src/ops/quantized_linear.ts";
import { Rng } from "../src/util/rng.ts";
import { randomInputs, randomUniformLayer, randomVqLayer } from "../tests/_quantized_layers.ts";

/** Products recorded per submit: decode, prefill. */
const REPS = { decode: 8, prefill: 2 };
/** Tokens of the prefill measurement. */
const PREFILL_TOKENS = 64;
/** Memory-bound shapes [rows, cols]: a square projection and an MLP projection of a 1B-class model. */
const SHAPES: [number, number][] = [[2048, 2048], [5632, 2048]];

/** One layer under test and what it costs in GPU memory. */
interface Subject {
  name: string;
  /** Stored weight bytes on the GPU. */
  weightBytes: number;
  /** Bits per weight of those bytes. */
  bpw: number;
  record: (
    gpu: GpuContext,
    batch: ReturnType<GpuContext["batch"]>,
    x: GPUBuffer,
    y: GPUBuffer,
    tokens: number,
  ) => Promise<void>;
}

async function subjects(gpu: GpuContext, rows: number, cols: number): Promise<Subject[]> {
  const rng = new Rng(rows + cols);
  const dense: GpuMatrix = uploadMatrix(
    gpu,
    Float32Array.from({ length: rows * cols }, () => rng.normal()),
    rows,
    cols,
    "dense",
  );
  const weights = rows * cols;
  const list: Subject[] = [{
    name: "dense f32",
    weightBytes: weights * 4,
    bpw: 32,
    record: (gpu, batch, x, y, tokens) => linear(gpu, batch, { x, w: dense, y, rows: tokens }),
  }];
  // RSAVQ-like layouts: 4 channel groups of 8-bit indices with v = 4, and one 16-bit group
  // with v = 8 whose 1 MiB codebook is counted in this one layer (a model shares it)
  const quarter = rows / 4;
  const layouts = [
    {
      name: "vq v4 K256 x4 groups",
      fixture: randomVqLayer({
        rows,
        cols,
        vectorLength: 4,
        channelOrder: true,
        groups: [0, 1, 2, 3].map(() => ({ rows: quarter, sizes: [256] })),
      }, 1),
    },
    {
      name: "vq v8 K65536 +codebook",
      fixture: randomVqLayer({
        rows,
        cols,
        vectorLength: 8,
        channelOrder: true,
        groups: [{ rows, sizes: [65536] }],
      }, 2),
    },
    {
      name: "uniform 2-bit g128",
      fixture: randomUniformLayer({ kind: "uniform", rows, cols, bits: 2, groupSize: 128 }, 3),
    },
  ];
  for (const { name, fixture } of layouts) {
    const layer = await QuantizedLinear.upload(
      gpu,
      fixture.prefix,
      fixture.layer,
      memoryTensors(fixture.tensors),
    );
    list.push({
      name,
      weightBytes: layer.weightBytes,
      bpw: (layer.weightBytes * 8) / weights,
      record: (_gpu, batch, x, y, tokens) => layer.record(batch, { x, y, tokens }),
    });
  }
  return list;
}

/** Seconds per product, from several products in one submit. */
async function timeProduct(
  gpu: GpuContext,
  subject: Subject,
  x: GPUBuffer,
  y: GPUBuffer,
  tokens: number,
): Promise<number> {
  const reps = tokens === 1 ? REPS.decode : REPS.prefill;
  const batch = gpu.batch();
  for (let r = 0; r < reps; r++) await subject.record(gpu, batch, x, y, tokens);
  const start = performance.now();
  await batch.submit();
  return (performance.now() - start) / 1000 / reps;
}

const gpu = await GpuContext.create();
const cases: { shape: [number, number]; subjects: Subject[]; x: GPUBuffer; y: GPUBuffer }[] = [];
for (const [rows, cols] of SHAPES) {
  const x = gpu.upload(randomInputs(PREFILL_TOKENS, cols, 9), "x");
  const y = gpu.createBuffer(PREFILL_TOKENS * rows * 4, "y");
  cases.push({ shape: [rows, cols], subjects: await subjects(gpu, rows, cols), x, y });
}

if (import.meta.main) {
  // table mode: the best of 5 measurements after one warm-up (pipeline compilation). The
  // minimum is the least disturbed by other processes that share a software adapter's CPU.
  console.log(
    `adapter: ${gpu.adapterName}; products per submit: ${REPS.decode} decode, ${REPS.prefill} prefill; prefill T = ${PREFILL_TOKENS}`,
  );
  console.log(
    "shape        | layer                  | weight MiB |   bpw | decode ms | decode GB/s | prefill ms | prefill tok/s",
  );
  for (const c of cases) {
    for (const s of c.subjects) {
      const best = async (tokens: number) => {
        await timeProduct(gpu, s, c.x, c.y, tokens);
        const times = [];
        for (let i = 0; i < 5; i++) times.push(await timeProduct(gpu, s, c.x, c.y, tokens));
        return Math.min(...times);
      };
      const decode = await best(1);
      const prefill = Deno.args.includes("--decode-only") ? NaN : await best(PREFILL_TOKENS);
      console.log([
        `${c.shape[0]}x${c.shape[1]}`.padEnd(12),
        s.name.padEnd(22),
        (s.weightBytes / 2 ** 20).toFixed(2).padStart(10),
        s.bpw.toFixed(2).padStart(5),
        (decode * 1e3).toFixed(2).padStart(9),
        (s.weightBytes / decode / 1e9).toFixed(2).padStart(11),
        (prefill * 1e3).toFixed(2).padStart(10),
        (PREFILL_TOKENS / prefill).toFixed(0).padStart(13),
      ].join(" | "));
    }
  }
  gpu.destroy();
} else {
  for (const c of cases) {
    for (const s of c.subjects) {
      const shape = `${c.shape[0]}x${c.shape[1]}`;
      const mib = (s.weightBytes / 2 ** 20).toFixed(2);
      Deno.bench(`${shape} ${s.name} (${mib} MiB) decode x${REPS.decode}`, {
        group: `${shape} decode`,
      }, async () => {
        await timeProduct(gpu, s, c.x, c.y, 1);
      });
      Deno.bench(`${shape} ${s.name} (${mib} MiB) prefill T=${PREFILL_TOKENS} x${REPS.prefill}`, {
        group: `${shape} prefill`,
      }, async () => {
        await timeProduct(gpu, s, c.x, c.y, PREFILL_TOKENS);
      });
    }
  }
}
