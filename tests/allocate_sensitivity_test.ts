import assert from "node:assert/strict";
import { join } from "node:path";
import { type LayerFisherStats, openFisherStats } from "../src/allocate/fisher_source.ts";
import { channelSensitivity, rowVariance } from "../src/allocate/sensitivity.ts";
import { writeFisherStats } from "../src/calibrate/fisher_file.ts";
import { FormatError } from "../src/errors.ts";
import { writeSafetensors } from "../src/formats/safetensors.ts";
import { Rng } from "../src/util/rng.ts";

const ROWS = 7, COLS = 11;

function randomArray(rng: Rng, n: number, positive = false): Float32Array {
  return Float32Array.from({ length: n }, () => (positive ? Math.exp(rng.normal()) : rng.normal()));
}

/** Statistics of S sequence gradients g_s = mean + noise * N(0, 1), [ROWS, COLS] each. */
function sequenceStats(rng: Rng, sequences: number, mean: number, noise: number): LayerFisherStats {
  const gradMean = new Float64Array(ROWS * COLS), second = new Float64Array(ROWS * COLS);
  for (let s = 0; s < sequences; s++) {
    for (let i = 0; i < gradMean.length; i++) {
      const g = mean + noise * rng.normal();
      gradMean[i] += g / sequences;
      second[i] += (g * g) / sequences;
    }
  }
  return {
    name: "l",
    rows: ROWS,
    cols: COLS,
    aDiag: randomArray(rng, COLS, true),
    gDiag: randomArray(rng, ROWS, true),
    gradMean: Float32Array.from(gradMean),
    fisherDiag: Float32Array.from(second),
    sequences,
  };
}

Deno.test("channelSensitivity trace matches trace(F_c) * var(W_c)", () => {
  const rng = new Rng(31);
  const stats = sequenceStats(rng, 4, 0, 1);
  const w = randomArray(rng, ROWS * COLS);
  const kfac = channelSensitivity(stats, w, { kind: "trace", fisher: "kfac" });
  const empirical = channelSensitivity(stats, w, { kind: "trace", fisher: "empirical" });
  for (let c = 0; c < ROWS; c++) {
    const row = Array.from(w.subarray(c * COLS, (c + 1) * COLS));
    const mean = row.reduce((a, b) => a + b) / COLS;
    const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / COLS;
    assert.ok(Math.abs(rowVariance(w, c, COLS) - variance) <= 1e-12 * variance);
    let traceK = 0, traceE = 0;
    for (let j = 0; j < COLS; j++) {
      traceK += stats.gDiag![c] * stats.aDiag![j];
      traceE += stats.fisherDiag![c * COLS + j];
    }
    assert.ok(
      Math.abs(kfac.values[c] - traceK * variance) <= 1e-12 * traceK * variance,
      `kfac channel ${c}`,
    );
    assert.ok(
      Math.abs(empirical.values[c] - traceE * variance) <= 1e-12 * traceE * variance,
      `empirical channel ${c}`,
    );
  }
  assert.equal(kfac.kind, "trace");
});

Deno.test("channelSensitivity gradient matches g_c^T F_c g_c", () => {
  const rng = new Rng(32);
  const stats = sequenceStats(rng, 64, 1, 0.1);
  const result = channelSensitivity(stats, null, { kind: "gradient", fisher: "kfac" });
  assert.equal(result.kind, "gradient");
  for (let c = 0; c < ROWS; c++) {
    let expected = 0;
    for (let j = 0; j < COLS; j++) {
      expected += stats.gDiag![c] * stats.aDiag![j] * stats.gradMean![c * COLS + j] ** 2;
    }
    assert.ok(Math.abs(result.values[c] - expected) <= 1e-12 * expected, `channel ${c}`);
  }
});

Deno.test("channelSensitivity gradient falls back to trace on noise", () => {
  const rng = new Rng(33);
  const w = randomArray(rng, ROWS * COLS);
  // Zero-mean sequence gradients: the mean over 64 sequences is sampling noise.
  const noise = sequenceStats(rng, 64, 0, 1);
  assert.equal(channelSensitivity(noise, w, { kind: "gradient" }).kind, "trace");
  // A consistent gradient well above its noise is used.
  const signal = sequenceStats(rng, 64, 0.5, 1);
  assert.equal(channelSensitivity(signal, w, { kind: "gradient" }).kind, "gradient");
  // An all-zero mean gradient counts as noise even without a sequence count.
  const zero = { ...signal, sequences: undefined, gradMean: new Float32Array(ROWS * COLS) };
  assert.equal(channelSensitivity(zero, w, { kind: "gradient" }).kind, "trace");
});

Deno.test("channelSensitivity names the missing statistic", () => {
  const rng = new Rng(34);
  const stats = sequenceStats(rng, 4, 0, 1);
  const w = randomArray(rng, ROWS * COLS);
  const cases: [Partial<LayerFisherStats>, "kfac" | "empirical", string][] = [
    [{ aDiag: undefined }, "kfac", "l.A"],
    [{ gDiag: undefined }, "kfac", "l.G_diag"],
    [{ fisherDiag: undefined }, "empirical", "l.fisher_diag"],
    [{ aDiag: new Float32Array(COLS + 1) }, "kfac", "l.A (diagonal)"],
  ];
  for (const [change, fisher, field] of cases) {
    assert.throws(
      () => channelSensitivity({ ...stats, source: "stats.safetensors", ...change }, w, { fisher }),
      (err: unknown) =>
        err instanceof FormatError && err.field === field && err.file === "stats.safetensors",
      field,
    );
  }
  assert.throws(
    () => channelSensitivity(stats, null, { kind: "trace" }),
    /needs the layer's weights/,
  );
});

Deno.test("openFisherStats reads calibration files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(35);
    const a = randomArray(rng, COLS * COLS); // [COLS, COLS]
    const linear = {
      A: a,
      G_diag: randomArray(rng, ROWS, true),
      grad_mean: randomArray(rng, ROWS * COLS),
      fisher_diag: randomArray(rng, ROWS * COLS, true),
    };
    const path = join(dir, "fisher.safetensors");
    const metadata = {
      model: "m",
      data: "d",
      seqLen: 8,
      sequences: 3,
      tokens: 24,
      seed: 1,
      fullG: false,
      meanLoss: 1,
    };
    await writeFisherStats(path, new Map([["model.layers.0.mlp.up_proj", linear]]), metadata);
    const source = await openFisherStats(path);
    try {
      assert.deepEqual(source.layers(), ["model.layers.0.mlp.up_proj"]);
      const stats = await source.read("model.layers.0.mlp.up_proj");
      assert.equal(stats.rows, ROWS);
      assert.equal(stats.cols, COLS);
      assert.equal(stats.sequences, 3);
      assert.deepEqual(stats.aDiag, Float32Array.from({ length: COLS }, (_, i) => a[i * COLS + i]));
      assert.deepEqual(stats.gDiag, linear.G_diag);
    } finally {
      source.close();
    }

    const other = join(dir, "other.safetensors");
    await writeSafetensors(other, { x: { dtype: "F32", shape: [1], data: new Uint8Array(4) } }, {
      format: "something",
    });
    await assert.rejects(
      () => openFisherStats(other),
      (err: unknown) => err instanceof FormatError && err.field === "__metadata__.format",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
