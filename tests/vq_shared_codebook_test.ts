import assert from "node:assert/strict";
import { weightedKmeans } from "../src/quantize/kmeans.ts";
import { syntheticStatistics } from "../src/quantize/statistics.ts";
import type { VqSettings } from "../src/quantize/types.ts";
import { roundF16 } from "../src/quantize/uniform.ts";
import {
  layerTrainingVectors,
  quantizeVqLayer,
  type VqLayerInput,
} from "../src/quantize/vq_layer.ts";
import { Rng } from "../src/util/rng.ts";

Deno.test("quantizeVqLayer shared codebook matches its own", async () => {
  const rows = 40, cols = 26, k = 32, prefix = "layer";
  const rng = new Rng(12);
  const weight = Float32Array.from({ length: rows * cols }, () => rng.normal());
  const stats = await syntheticStatistics([{ prefix, rows, cols }], new Rng(2)).layer(prefix);
  const metric = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) metric[r * cols + j] = stats.gDiag![r] * stats.A[j * cols + j];
  }
  const allRows = Uint32Array.from({ length: rows }, (_, i) => i);
  const input: VqLayerInput = {
    prefix,
    weight,
    rows,
    cols,
    metric,
    hessian: stats.A,
    direction: null,
    groups: [{ rows: allRows, codebookSize: k, residualSize: 0 }],
  };
  const settings = (): VqSettings => ({
    vectorLength: 4,
    iterations: 6,
    seedRounds: 4,
    damp: 0.01,
    lambda: 0,
    edsgMode: "none",
    fisherMetric: "kfac",
    gpuUse: "never",
    gpu: null,
    rng: new Rng(5),
  });
  const own = await quantizeVqLayer(input, settings());

  // Train the same codebook outside, as a scope of one layer would, and share it.
  const s = settings();
  const [{ points, weights }] = layerTrainingVectors(input, s);
  const trained = await weightedKmeans(points, weights, {
    k,
    vectorLength: 4,
    iterations: 6,
    seedRounds: 4,
    rng: s.rng,
    gpu: null,
  });
  const codebook = trained.codebook.map(roundF16);
  const shared = await quantizeVqLayer({
    ...input,
    groups: [{
      rows: allRows,
      codebookSize: k,
      residualSize: 0,
      shared: [{ name: "scope.codebook", codebook }],
    }],
  }, s);

  assert.deepEqual(shared.dequantized, own.dequantized);
  assert.deepEqual(
    shared.tensors["layer.indices.g0.s0"].data,
    own.tensors["layer.indices.g0.s0"].data,
  );
  assert.equal(shared.tensors["scope.codebook"], undefined);
  assert.equal(
    shared.desc.kind === "vq" && shared.desc.groups[0].stages[0].codebook,
    "scope.codebook",
  );
  assert.equal(own.bytes.total - shared.bytes.total, 2 * k * 4);
  assert.equal(shared.bytes.codebooks, 0);
});

Deno.test("quantizeVqLayer rejects misshapen shared codebooks", async () => {
  const input: VqLayerInput = {
    prefix: "l",
    weight: new Float32Array(16),
    rows: 2,
    cols: 8,
    metric: null,
    hessian: null,
    direction: null,
    groups: [{
      rows: new Uint32Array([0, 1]),
      codebookSize: 4,
      residualSize: 0,
      shared: [{ name: "c", codebook: new Float32Array(12) }],
    }],
  };
  const settings: VqSettings = {
    vectorLength: 4,
    iterations: 1,
    seedRounds: 1,
    damp: 0.01,
    lambda: 0,
    edsgMode: "none",
    fisherMetric: "kfac",
    gpuUse: "never",
    gpu: null,
    rng: new Rng(1),
  };
  await assert.rejects(() => quantizeVqLayer(input, settings), /\[4, 4\]/);
});
