import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import {
  codewordsPerDispatch,
  type EdsgMode,
  nearestCodewordsCpu,
  nearestCodewordsGpu,
  type NearestJob,
} from "../src/quantize/nearest.ts";
import { Rng } from "../src/util/rng.ts";

function randomJob(
  rng: Rng,
  n: number,
  k: number,
  v: number,
  mode: EdsgMode = "none",
  lambda = 0,
): NearestJob {
  const fill = (len: number, f: () => number) => Float32Array.from({ length: len }, f);
  return {
    vectorLength: v,
    points: fill(n * v, () => rng.normal()),
    weights: fill(n * v, () => 0.1 + rng.next()),
    codebook: fill(k * v, () => rng.normal()),
    guide: mode === "none" ? undefined : fill(n * (v + 1), () => rng.normal()),
    mode,
    lambda,
  };
}

/** Asserts GPU and CPU pick the same codeword, except in near ties (f32 against f64 scores). */
function assertSameChoice(job: NearestJob, gpu: { index: Uint32Array; score: Float64Array }) {
  const cpu = nearestCodewordsCpu(job);
  let ties = 0;
  for (let i = 0; i < cpu.index.length; i++) {
    assert.ok(
      Math.abs(gpu.score[i] - cpu.score[i]) <= 1e-4 * (1 + Math.abs(cpu.score[i])),
      `score ${i}: ${gpu.score[i]} vs ${cpu.score[i]}`,
    );
    if (gpu.index[i] !== cpu.index[i]) ties++;
  }
  assert.ok(ties <= 1, `${ties} vectors got a different codeword than brute force`);
}

Deno.test("nearestCodewordsGpu matches brute force", async () => {
  const gpu = await GpuContext.create();
  try {
    const rng = new Rng(11);
    // case table: n vectors, K codewords, v, mode, lambda, codewords per dispatch
    const cases: [number, number, number, EdsgMode, number, number | undefined][] = [
      [1, 1, 2, "none", 0, undefined],
      [130, 300, 4, "none", 0, 7],
      [65, 77, 6, "projection", 0.3, 10],
      [129, 50, 8, "linear", 0.2, undefined],
      [64, 513, 2, "projection", 0, 64],
    ];
    for (const [n, k, v, mode, lambda, chunk] of cases) {
      const job = randomJob(rng, n, k, v, mode, lambda);
      const [result] = await nearestCodewordsGpu(gpu, [job], chunk);
      assertSameChoice(job, result);
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("nearestCodewordsGpu handles K above the loop cap", async () => {
  const gpu = await GpuContext.create();
  try {
    const rng = new Rng(5);
    const k = 65536 + 37, v = 2, n = 70;
    const job = randomJob(rng, n, k, v);
    // Plant each vector's exact match in the tail of the codebook, past any single scan's reach.
    for (let i = 0; i < n; i++) {
      const target = k - 1 - 3 * i;
      for (let d = 0; d < v; d++) job.codebook[target * v + d] = job.points[i * v + d];
    }
    assert.ok(codewordsPerDispatch(v) < k);
    const [result] = await nearestCodewordsGpu(gpu, [job]);
    for (let i = 0; i < n; i++) assert.equal(result.index[i], k - 1 - 3 * i, `vector ${i}`);
    assertSameChoice(job, result);
  } finally {
    gpu.destroy();
  }
});
