import assert from "node:assert/strict";
import { FormatError } from "../src/errors.ts";
import { openQuantizedModel, unpackChannelOrder } from "../src/formats/quantized.ts";
import { loadModel } from "../src/model/load.ts";
import { vqLayerBytes } from "../src/quantize/bpw.ts";
import { chooseCodebookSize, chooseUniformBits, vqLayerBpw } from "../src/quantize/budget.ts";
import { validateWcsgPlan, type WcsgPlan } from "../src/quantize/plan.ts";
import { linearPrefixes, quantizeModel } from "../src/quantize/quantize_model.ts";
import { syntheticStatistics } from "../src/quantize/statistics.ts";
import { uniformLayerBytes } from "../src/quantize/bpw.ts";
import { Rng } from "../src/util/rng.ts";
import { STORIES_260K } from "./_helpers.ts";

function shuffled(n: number, rng: Rng): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

Deno.test("quantizeModel follows a WCSG plan exactly", async () => {
  const model = await loadModel(STORIES_260K);
  const rng = new Rng(6);
  const prefixes = linearPrefixes(model).slice(4, 7); // gate, up, down of block 0
  const plan: WcsgPlan = { format: "rsavq-plan", version: 2, layers: {} };
  for (const [i, prefix] of prefixes.entries()) {
    const [rows, cols] = model.weights.shape(`${prefix}.weight`);
    const a = Math.floor(rows / 4), b = Math.floor(rows / 2);
    plan.layers[prefix] = {
      rows,
      cols,
      vectorLength: 4,
      channelOrder: shuffled(rows, rng),
      // the last layer has one group: its shuffled order must not be stored
      groups: i === prefixes.length - 1
        ? [{ start: 0, end: rows, codebookSize: 32 }]
        : [{ start: 0, end: a, codebookSize: 64 }, { start: a, end: b, codebookSize: 17 }, {
          start: b,
          end: rows,
          codebookSize: 4,
        }],
    };
  }
  const stats = syntheticStatistics(
    prefixes.map((prefix) => ({
      prefix,
      rows: plan.layers[prefix].rows,
      cols: plan.layers[prefix].cols,
    })),
    new Rng(1),
  );
  const out = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    const result = await quantizeModel(model, stats, {
      method: "rsavq",
      bits: 8,
      plan: validateWcsgPlan(plan, "plan"),
      out,
      layers: prefixes,
      quiet: true,
      gpu: null,
      iterations: 3,
    });
    const q = await openQuantizedModel(out);
    for (const layer of result.layers) {
      const p = plan.layers[layer.prefix];
      const expected = vqLayerBytes({
        rows: p.rows,
        cols: p.cols,
        vectorLength: 4,
        permutation: p.groups.length > 1,
        groups: p.groups.map((g) => ({ rows: g.end - g.start, codebookSize: g.codebookSize })),
      });
      // packed at ceil(log2 rows) bits per row, counted exactly as stored
      assert.equal(
        layer.bytes.permutation,
        p.groups.length > 1 ? 4 * Math.ceil((p.rows * Math.ceil(Math.log2(p.rows))) / 32) : 0,
      );
      assert.deepEqual(layer.bytes, expected, layer.prefix);
      const desc = q.layers[layer.prefix];
      assert.equal(desc.kind, "vq");
      if (desc.kind !== "vq") continue;
      assert.deepEqual(
        desc.groups.map((g) => [g.start, g.end, g.stages[0].size]),
        p.groups.map((g) => [g.start, g.end, g.codebookSize]),
      );
      if (p.groups.length > 1) {
        const words = new Uint32Array(
          (await q.file.readBytes(`${layer.prefix}.channel_order`)).buffer,
        );
        assert.equal(words.byteLength, layer.bytes.permutation);
        assert.deepEqual(Array.from(unpackChannelOrder(words, p.rows)), p.channelOrder);
      } else {
        assert.equal(desc.channelOrder, false);
        assert.equal(q.file.tensors.has(`${layer.prefix}.channel_order`), false);
      }
      // The file dequantizes to the weights the quantizer measured its error on.
      const w = await model.weights.read(`${layer.prefix}.weight`),
        wq = await q.weights.read(`${layer.prefix}.weight`);
      let num = 0, den = 0;
      const a = (await stats.layer(layer.prefix)).A, cols = p.cols;
      for (let r = 0; r < p.rows; r++) {
        for (let i = 0; i < cols; i++) {
          let se = 0, sw = 0;
          for (let j = 0; j < cols; j++) {
            se += a[i * cols + j] * (wq[r * cols + j] - w[r * cols + j]);
            sw += a[i * cols + j] * w[r * cols + j];
          }
          num += (wq[r * cols + i] - w[r * cols + i]) * se;
          den += w[r * cols + i] * sw;
        }
      }
      assert.equal(num / den, layer.relativeError);
    }
    q.weights.close();
  } finally {
    model.weights.close();
    await Deno.remove(out);
  }
});

Deno.test("validateWcsgPlan rejects malformed plans", () => {
  const base = {
    rows: 4,
    cols: 8,
    vectorLength: 4,
    channelOrder: [0, 1, 2, 3],
    groups: [{ start: 0, end: 4, codebookSize: 8 }],
  };
  // case table: change to the layer, field the error must name
  const cases: [Record<string, unknown>, string][] = [
    [{ channelOrder: [0, 1, 1, 3] }, "channelOrder"],
    [{ groups: [{ start: 0, end: 3, codebookSize: 8 }] }, "groups"],
    [{ groups: [{ start: 1, end: 4, codebookSize: 8 }] }, "groups[0]"],
    [{ groups: [{ start: 0, end: 4, codebookSize: 70000 }] }, "groups[0].codebookSize"],
    [{ vectorLength: 0 }, "vectorLength"],
  ];
  for (const [change, field] of cases) {
    assert.throws(
      () =>
        validateWcsgPlan(
          { format: "rsavq-plan", version: 2, layers: { l: { ...base, ...change } } },
          "p.json",
        ),
      (e) => e instanceof FormatError && e.field === `layers.l.${field}`,
      field,
    );
  }
  assert.throws(() => validateWcsgPlan({ format: "other" }, "p.json"), /rsavq-plan/);
  assert.throws(
    () =>
      validateWcsgPlan(
        { format: "rsavq-plan", version: 2, distortion: "bogus", layers: { l: base } },
        "p.json",
      ),
    (e) => e instanceof FormatError && e.field === "distortion",
  );
});

Deno.test("budget choosers pick the largest fitting setting", () => {
  // case table: rows, cols, v, target bpw, residual
  const cases: [number, number, number, number, number][] = [
    [64, 64, 4, 2, 0],
    [172, 64, 8, 3, 0],
    [64, 172, 6, 4, 16],
    [4096, 4096, 8, 2, 0],
    [32, 64, 2, 3.3, 0],
  ];
  for (const [rows, cols, v, bits, residual] of cases) {
    const k = chooseCodebookSize(rows, cols, v, bits, residual);
    assert.ok(vqLayerBpw(rows, cols, v, k, residual) <= bits);
    if (k < 65536) assert.ok(vqLayerBpw(rows, cols, v, k + 1, residual) > bits);
  }
  assert.equal(chooseCodebookSize(4096, 4096, 8, 2.6), 65536);
  assert.throws(() => chooseCodebookSize(8, 8, 4, 0.5), /raise --bits/);
  for (const [rows, cols, group, bits] of [[64, 172, 128, 3], [64, 64, 32, 4.1]]) {
    const b = chooseUniformBits(rows, cols, group, bits);
    assert.ok(uniformLayerBytes(rows, cols, b, group).total * 8 <= bits * rows * cols);
    assert.ok(
      b === 8 || uniformLayerBytes(rows, cols, b + 1, group).total * 8 > bits * rows * cols,
    );
  }
});

Deno.test("quantizeModel rejects a plan above the target bits", async () => {
  const model = await loadModel(STORIES_260K);
  const prefix = "model.layers.0.self_attn.k_proj";
  const plan: WcsgPlan = {
    format: "rsavq-plan",
    version: 2,
    layers: {
      [prefix]: {
        rows: 32,
        cols: 64,
        vectorLength: 4,
        channelOrder: Array.from({ length: 32 }, (_, i) => i),
        groups: [{ start: 0, end: 32, codebookSize: 256 }],
      },
    },
  };
  try {
    await assert.rejects(
      () =>
        quantizeModel(model, null, {
          method: "kmeans",
          bits: 3,
          plan,
          out: "/nonexistent/q.safetensors",
          layers: [prefix],
          quiet: true,
          gpu: null,
        }),
      /rerun deno task allocate/,
    );
  } finally {
    model.weights.close();
  }
});
