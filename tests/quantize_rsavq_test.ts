import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { quantizeRsavqLayer } from "../src/quantize/rsavq.ts";
import { naturalGradient, normalizeDirection } from "../src/quantize/edsg.ts";
import { syntheticStatistics } from "../src/quantize/statistics.ts";
import type { EdsgMode } from "../src/quantize/nearest.ts";
import type { GpuUse, VqLayerJob, VqSettings } from "../src/quantize/types.ts";
import { Rng } from "../src/util/rng.ts";

const ROWS = 48, COLS = 30, PREFIX = "layer";

async function fixture(): Promise<VqLayerJob> {
  const rng = new Rng(21);
  const weight = Float32Array.from({ length: ROWS * COLS }, () => 0.2 * rng.normal());
  const stats = await syntheticStatistics([{ prefix: PREFIX, rows: ROWS, cols: COLS }], new Rng(3))
    .layer(PREFIX);
  // A mean gradient large enough that EDSG has something to steer by.
  stats.gradMean = Float32Array.from({ length: ROWS * COLS }, () => rng.normal());
  return {
    prefix: PREFIX,
    weight,
    rows: ROWS,
    cols: COLS,
    stats,
    groups: [{
      rows: Uint32Array.from({ length: ROWS }, (_, i) => i),
      codebookSize: 40,
      residualSize: 0,
    }],
  };
}

function settings(
  edsgMode: EdsgMode,
  lambda: number,
  gpu: GpuContext | null,
  gpuUse: GpuUse,
): VqSettings {
  return {
    vectorLength: 4,
    iterations: 5,
    seedRounds: 8,
    damp: 0.01,
    lambda,
    edsgMode,
    fisherMetric: "kfac",
    gpuUse,
    gpu,
    rng: new Rng(7),
  };
}

Deno.test("quantizeRsavqLayer lambda 0 equals Fisher-weighted VQ", async () => {
  const job = await fixture();
  const gpu = await GpuContext.create();
  try {
    for (const [device, use] of [[null, "never"], [gpu, "always"]] as const) {
      const plain = await quantizeRsavqLayer(job, settings("none", 0.05, device, use));
      for (const mode of ["projection", "linear"] as const) {
        const zero = await quantizeRsavqLayer(job, settings(mode, 0, device, use));
        assert.deepEqual(Object.keys(zero.tensors), Object.keys(plain.tensors));
        for (const name of Object.keys(plain.tensors)) {
          assert.deepEqual(zero.tensors[name].data, plain.tensors[name].data, `${mode} ${name}`);
        }
        assert.deepEqual(zero.dequantized, plain.dequantized);
      }
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("quantizeRsavqLayer EDSG shrinks the projection", async () => {
  const job = await fixture();
  const { gradMean, gDiag, A } = job.stats!;
  const metric = new Float32Array(ROWS * COLS);
  for (let r = 0; r < ROWS; r++) {
    for (let j = 0; j < COLS; j++) metric[r * COLS + j] = gDiag![r] * A[j * COLS + j];
  }
  const n = normalizeDirection(
    naturalGradient(gradMean!, gDiag!, A, ROWS, COLS, 0.01),
    metric,
    ROWS,
    COLS,
  );
  const projection = (q: Float32Array) => {
    let total = 0;
    for (let r = 0; r < ROWS; r++) {
      let s = 0;
      for (let j = 0; j < COLS; j++) {
        s += (q[r * COLS + j] - job.weight[r * COLS + j]) * n[r * COLS + j];
      }
      total += s * s;
    }
    return total;
  };
  const linearTerm = (q: Float32Array) => {
    let total = 0;
    for (let i = 0; i < q.length; i++) total += (q[i] - job.weight[i]) * n[i];
    return total;
  };
  const plain = await quantizeRsavqLayer(job, settings("none", 0, null, "never"));
  // A larger lambda leaves less error along N.
  let previous = projection(plain.dequantized);
  for (const lambda of [1, 10]) {
    const guided = projection(
      (await quantizeRsavqLayer(job, settings("projection", lambda, null, "never"))).dequantized,
    );
    assert.ok(
      guided < 0.8 * previous,
      `lambda ${lambda}: projection ${guided} vs ${previous} before`,
    );
    previous = guided;
  }
  const linear = await quantizeRsavqLayer(job, settings("linear", 1, null, "never"));
  assert.ok(
    linearTerm(linear.dequantized) < linearTerm(plain.dequantized),
    `<N, E> ${linearTerm(linear.dequantized)} vs ${linearTerm(plain.dequantized)}`,
  );
});

Deno.test("quantizeRsavqLayer requires grad_mean for lambda > 0", async () => {
  const job = await fixture();
  job.stats = { A: job.stats!.A, gDiag: job.stats!.gDiag };
  await assert.rejects(
    () => quantizeRsavqLayer(job, settings("projection", 0.1, null, "never")),
    /grad_mean/,
  );
  await quantizeRsavqLayer(job, settings("projection", 0, null, "never"));
});
