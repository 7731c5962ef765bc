import assert from "node:assert/strict";
import {
  openQuantizedModel,
  type QuantizedModelFile,
  type VqStage,
} from "../src/formats/quantized.ts";
import { loadModel } from "../src/model/load.ts";
import type { LoadedModel } from "../src/model/model.ts";
import { chooseCodebookSize, chooseScopeCodebookSize, vqScopeBpw } from "../src/quantize/budget.ts";
import { weightedKmeans } from "../src/quantize/kmeans.ts";
import { validateWcsgPlan, type WcsgPlan } from "../src/quantize/plan.ts";
import {
  linearPrefixes,
  quantizeModel,
  type QuantizeOptions,
  type QuantizeResult,
} from "../src/quantize/quantize_model.ts";
import { groupLayersByScope } from "../src/quantize/scope.ts";
import { ScopeTrainingSet } from "../src/quantize/shared_codebooks.ts";
import { syntheticStatistics } from "../src/quantize/statistics.ts";
import type { VqSettings } from "../src/quantize/types.ts";
import { roundF16 } from "../src/quantize/uniform.ts";
import { layerTrainingVectors, type VqLayerInput } from "../src/quantize/vq_layer.ts";
import { Rng } from "../src/util/rng.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "./_helpers.ts";

/** Synthetic statistics for every linear layer of a model. */
function statsFor(model: LoadedModel, seed: number) {
  return syntheticStatistics(
    linearPrefixes(model).map((prefix) => {
      const [rows, cols] = model.weights.shape(`${prefix}.weight`);
      return { prefix, rows, cols };
    }),
    new Rng(seed),
  );
}

/** Names of the tensors a quantized layer references. */
function layerTensorNames(q: QuantizedModelFile, prefix: string): string[] {
  const layer = q.layers[prefix];
  if (layer.kind !== "vq") throw new Error(`${prefix} is not vector-quantized`);
  return [
    `${prefix}.scales`,
    ...(layer.channelOrder ? [`${prefix}.channel_order`] : []),
    ...layer.groups.flatMap((g) => g.stages.flatMap((s) => [s.indices, s.codebook])),
  ];
}

/** Checks that two files store the same quantized layers, codebook names aside. */
async function assertSameLayers(a: QuantizedModelFile, b: QuantizedModelFile, prefixes: string[]) {
  for (const prefix of prefixes) {
    const [la, lb] = [a.layers[prefix], b.layers[prefix]];
    if (la.kind !== "vq" || lb.kind !== "vq") throw new Error(`${prefix} is not vector-quantized`);
    assert.deepEqual(
      await a.weights.read(`${prefix}.weight`),
      await b.weights.read(`${prefix}.weight`),
      `${prefix}: dequantized weights`,
    );
    assert.deepEqual(
      await a.file.readBytes(`${prefix}.scales`),
      await b.file.readBytes(`${prefix}.scales`),
    );
    for (const [g, group] of la.groups.entries()) {
      for (const [s, stage] of group.stages.entries()) {
        const other: VqStage = lb.groups[g].stages[s];
        assert.equal(stage.size, other.size, `${prefix} g${g} s${s}: size`);
        assert.deepEqual(
          await a.file.readBytes(stage.indices),
          await b.file.readBytes(other.indices),
          `${prefix} g${g} s${s}: indices`,
        );
        assert.deepEqual(
          await a.file.readBytes(stage.codebook),
          await b.file.readBytes(other.codebook),
          `${prefix} g${g} s${s}: codebook`,
        );
      }
    }
  }
}

Deno.test("groupLayersByScope groups by block, type and model", () => {
  const prefixes = [0, 1].flatMap((l) =>
    ["self_attn.q_proj", "mlp.down_proj"].map((t) => `model.layers.${l}.${t}`)
  );
  // case table: scope, expected keys, layers in the first scope
  const cases: [Parameters<typeof groupLayersByScope>[1], string[], number][] = [
    ["layer", prefixes, 1],
    ["block", ["block.0", "block.1"], 2],
    ["type", ["type.self_attn.q_proj", "type.mlp.down_proj"], 2],
    ["model", ["model"], 4],
  ];
  for (const [scope, keys, first] of cases) {
    const groups = groupLayersByScope(prefixes, scope);
    assert.deepEqual(groups.map((g) => g.key), keys, scope);
    assert.equal(groups[0].prefixes.length, first, scope);
    assert.deepEqual(groups.flatMap((g) => g.prefixes).sort(), [...prefixes].sort(), scope);
  }
  assert.throws(() => groupLayersByScope(["lm_head"], "block"), /model\.layers/);
});

Deno.test("chooseScopeCodebookSize fits the scope budget", () => {
  // case table: layer shapes, v, target bpw, residual
  const cases: [{ rows: number; cols: number }[], number, number, number][] = [
    [[{ rows: 64, cols: 64 }], 4, 3, 0],
    [Array(7).fill({ rows: 64, cols: 64 }), 4, 3, 0],
    [[{ rows: 64, cols: 64 }, { rows: 172, cols: 64 }, { rows: 64, cols: 172 }], 2, 2, 0],
    [Array(35).fill({ rows: 64, cols: 172 }), 4, 2.5, 16],
  ];
  for (const [layers, v, bits, residual] of cases) {
    const k = chooseScopeCodebookSize(layers, v, bits, residual);
    assert.ok(vqScopeBpw(layers, v, k, residual) <= bits, `${layers.length} layers: K ${k} fits`);
    if (k < 65536) assert.ok(vqScopeBpw(layers, v, k + 1, residual) > bits, `K ${k + 1} does not`);
  }
  // One layer is the per-layer budget, and sharing over more weights affords a larger K.
  assert.equal(
    chooseScopeCodebookSize([{ rows: 172, cols: 64 }], 4, 3),
    chooseCodebookSize(172, 64, 4, 3),
  );
  const one = chooseScopeCodebookSize([{ rows: 64, cols: 64 }], 4, 3);
  assert.ok(chooseScopeCodebookSize(Array(7).fill({ rows: 64, cols: 64 }), 4, 3) > 2 * one);
  assert.throws(
    () =>
      chooseScopeCodebookSize([{ rows: 4, cols: 8 }, { rows: 4, cols: 8 }], 4, 0.5, 0, "block.0"),
    /codebook scope block\.0/,
  );
});

Deno.test("quantizeModel scope of one layer equals layer scope", async () => {
  const config = tinyConfig({ nLayers: 1 });
  const tiny: LoadedModel = {
    path: "synthetic",
    format: "hf",
    config,
    weights: randomWeights(config, 5),
    tokenizer: null,
    chatTemplate: null,
  };
  const stories = await loadModel(STORIES_260K);
  const qProjs = linearPrefixes(stories).filter((p) => p.endsWith("q_proj"));
  // case table: setup, model, layers, scope whose groups each hold one layer, options. A
  // one-block model has one layer per type; one q_proj per block has one layer per block.
  const cases: [
    string,
    LoadedModel,
    string[],
    QuantizeOptions["codebookScope"],
    Partial<QuantizeOptions>,
  ][] = [
    ["one block, type scope", tiny, linearPrefixes(tiny), "type", { method: "rsavq", lambda: 0.1 }],
    ["one block, type scope, residual", tiny, linearPrefixes(tiny), "type", {
      method: "kmeans",
      residual: 4,
    }],
    ["q_proj of each block, block scope", stories, qProjs, "block", {
      method: "vptq",
      vectorLength: 2,
    }],
    ["one layer, model scope", stories, [qProjs[2]], "model", { method: "rsavq", bits: 2.5 }],
  ];
  const dir = await Deno.makeTempDir();
  try {
    for (const [name, model, layers, scope, extra] of cases) {
      const stats = statsFor(model, 3);
      const run = (codebookScope: QuantizeOptions["codebookScope"]) =>
        quantizeModel(model, stats, {
          method: "rsavq",
          bits: 3,
          out: `${dir}/${codebookScope}.safetensors`,
          codebookScope,
          layers,
          quiet: true,
          gpu: null,
          iterations: 4,
          ...extra,
        });
      const own = await run("layer"), shared = await run(scope);
      assert.equal(shared.sharedCodebooks.length, layers.length * (extra.residual ? 2 : 1), name);
      assert.equal(shared.bpw, own.bpw, `${name}: bpw`);
      assert.equal(shared.fisherError, own.fisherError, `${name}: Fisher error`);
      const [a, b] = [await openQuantizedModel(own.path), await openQuantizedModel(shared.path)];
      await assertSameLayers(a, b, layers);
      a.weights.close();
      b.weights.close();
    }
  } finally {
    stories.weights.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Checks a result's bpw against the bytes its file stores for the quantized layers. */
function assertBpwMatchesFile(result: QuantizeResult, q: QuantizedModelFile, label: string) {
  const names = new Set(result.layers.flatMap((l) => layerTensorNames(q, l.prefix)));
  let stored = 0;
  for (const name of names) stored += q.file.info(name).byteLength;
  const weights = result.layers.reduce((n, l) => n + l.rows * l.cols, 0);
  const counted = result.layers.reduce((n, l) => n + l.bytes.total, 0) + result.sharedBytes;
  assert.equal(stored, counted, `${label}: stored bytes`);
  assert.equal(result.bpw, (stored * 8) / weights, `${label}: bpw`);
}

Deno.test("quantizeModel bpw equals stored bytes for every scope", async () => {
  const model = await loadModel(STORIES_260K);
  const prefixes = linearPrefixes(model).slice(0, 14); // blocks 0 and 1
  const stats = statsFor(model, 2);
  const dir = await Deno.makeTempDir();
  // case table: scope, method, bits, extra options
  const cases: [
    QuantizeOptions["codebookScope"],
    QuantizeOptions["method"],
    number,
    Partial<QuantizeOptions>,
  ][] = [
    ["layer", "rsavq", 3, {}],
    ["block", "rsavq", 3, { residual: 8 }],
    ["type", "vptq", 2, { vectorLength: 2 }],
    ["model", "kmeans", 4, {}],
    ["block", "kmeans", 3.5, { codebookSize: 200, vectorLength: 8 }],
  ];
  try {
    for (const [scope, method, bits, extra] of cases) {
      const label = `${scope} ${method} ${bits}`;
      const result = await quantizeModel(model, stats, {
        method,
        bits,
        out: `${dir}/${scope}-${method}.safetensors`,
        codebookScope: scope,
        layers: prefixes,
        quiet: true,
        gpu: null,
        iterations: 3,
        ...extra,
      });
      assert.ok(result.bpw <= bits, `${label}: ${result.bpw} bpw`);
      const q = await openQuantizedModel(result.path);
      assertBpwMatchesFile(result, q, label);
      assert.equal((q.quantization.settings as { codebookScope: string }).codebookScope, scope);
      if (scope !== "layer") {
        for (const l of result.layers) assert.equal(l.bytes.codebooks, 0, `${label} ${l.prefix}`);
      }
      q.weights.close();
    }
  } finally {
    model.weights.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantizeModel stores a shared codebook once", async () => {
  const model = await loadModel(STORIES_260K);
  const prefixes = linearPrefixes(model).slice(0, 14);
  const out = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    const result = await quantizeModel(model, null, {
      method: "kmeans",
      bits: 3,
      residual: 4,
      out,
      codebookScope: "block",
      layers: prefixes,
      quiet: true,
      gpu: null,
      iterations: 3,
    });
    const q = await openQuantizedModel(out);
    const codebookTensors = [...q.file.tensors.keys()].filter((n) => n.includes("codebook"));
    const expected = [
      "codebooks.block.0.g0.s0",
      "codebooks.block.0.g0.s1",
      "codebooks.block.1.g0.s0",
      "codebooks.block.1.g0.s1",
    ];
    assert.deepEqual(codebookTensors.sort(), expected);
    for (const [b, block] of [prefixes.slice(0, 7), prefixes.slice(7)].entries()) {
      for (const prefix of block) {
        const layer = q.layers[prefix];
        assert.ok(layer.kind === "vq");
        assert.deepEqual(
          layer.groups[0].stages.map((s) => s.codebook),
          [`codebooks.block.${b}.g0.s0`, `codebooks.block.${b}.g0.s1`],
          prefix,
        );
      }
    }
    const shared = q.quantization.sharedCodebooks as Record<
      string,
      { layers: string[]; bytes: number }
    >;
    assert.deepEqual(shared["codebooks.block.1.g0.s0"].layers, prefixes.slice(7));
    assert.equal(
      shared["codebooks.block.1.g0.s0"].bytes,
      q.file.info("codebooks.block.1.g0.s0").byteLength,
    );
    assert.equal(
      result.sharedBytes,
      expected.reduce((n, name) => n + q.file.info(name).byteLength, 0),
    );
    // The shared tensors are internal: a dense reader lists canonical weights only.
    assert.ok(!q.weights.names().some((n) => n.startsWith("codebooks.")));
    q.weights.close();
  } finally {
    model.weights.close();
    await Deno.remove(out);
  }
});

Deno.test("quantizeModel shares plan groups by rank", async () => {
  const model = await loadModel(STORIES_260K);
  const prefixes = linearPrefixes(model).slice(4, 7); // gate, up, down of block 0
  const rng = new Rng(9);
  const plan: WcsgPlan = { format: "rsavq-plan", version: 2, layers: {} };
  for (const prefix of prefixes) {
    const [rows, cols] = model.weights.shape(`${prefix}.weight`);
    const order = Array.from({ length: rows }, (_, i) => i).sort(() => rng.next() - 0.5);
    const half = Math.floor(rows / 2);
    plan.layers[prefix] = {
      rows,
      cols,
      vectorLength: 4,
      channelOrder: order,
      groups: [{ start: 0, end: half, codebookSize: 64 }, {
        start: half,
        end: rows,
        codebookSize: 16,
      }],
    };
  }
  const stats = statsFor(model, 4);
  const out = await Deno.makeTempFile({ suffix: ".safetensors" });
  const options: QuantizeOptions = {
    method: "rsavq",
    bits: 4,
    plan: validateWcsgPlan(plan, "plan"),
    out,
    codebookScope: "block",
    layers: prefixes,
    quiet: true,
    gpu: null,
    iterations: 3,
  };
  try {
    const result = await quantizeModel(model, stats, options);
    const q = await openQuantizedModel(out);
    for (const prefix of prefixes) {
      const layer = q.layers[prefix];
      assert.ok(layer.kind === "vq");
      assert.deepEqual(
        layer.groups.map((g) => [g.stages[0].codebook, g.stages[0].size]),
        [["codebooks.block.0.g0.s0", 64], ["codebooks.block.0.g1.s0", 16]],
        prefix,
      );
    }
    assertBpwMatchesFile(result, q, "plan, block scope");
    q.weights.close();

    // Layers of one scope whose plans disagree on a group's size cannot share its codebook.
    plan.layers[prefixes[2]].groups[1].codebookSize = 32;
    await assert.rejects(
      () => quantizeModel(model, stats, { ...options, plan }),
      /codebook sizes \[64, 16\].*codebook sizes \[64, 32\]/,
    );
  } finally {
    model.weights.close();
    await Deno.remove(out);
  }
});

Deno.test("quantizeModel auto picks lowest Fisher error", async () => {
  const model = await loadModel(STORIES_260K);
  const prefixes = linearPrefixes(model).slice(0, 14);
  const stats = statsFor(model, 6);
  const dir = await Deno.makeTempDir();
  const options = (codebookScope: QuantizeOptions["codebookScope"]): QuantizeOptions => ({
    method: "rsavq",
    bits: 3,
    out: `${dir}/${codebookScope}.safetensors`,
    codebookScope,
    layers: prefixes,
    quiet: true,
    gpu: null,
    iterations: 3,
  });
  try {
    const auto = await quantizeModel(model, stats, options("auto"));
    const table = auto.scopeChoices!;
    assert.deepEqual(table.map((t) => t.scope), ["layer", "block", "type", "model"]);
    const best = Math.min(...table.map((t) => t.fisherError!));
    assert.equal(auto.fisherError, best);
    assert.equal(table.find((t) => t.fisherError === best)!.scope, auto.codebookScope);
    for (const t of table) assert.ok(t.bpw! <= 3, `${t.scope}: ${t.bpw} bpw`);
    // A scope tried by auto gives what the same scope gives when requested alone.
    const alone = await quantizeModel(model, stats, options("block"));
    assert.equal(table[1].fisherError, alone.fisherError);
    assert.equal(table[1].bpw, alone.bpw);
    const q = await openQuantizedModel(auto.path);
    assert.equal(
      (q.quantization.settings as { codebookScope: string }).codebookScope,
      auto.codebookScope,
    );
    q.weights.close();

    await assert.rejects(
      () => quantizeModel(model, null, { ...options("auto"), method: "kmeans" }),
      /--fisher/,
    );
    await assert.rejects(
      () => quantizeModel(model, null, { ...options("block"), method: "rtn" }),
      /needs a vector-quantization method/,
    );
  } finally {
    model.weights.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ScopeTrainingSet weighs layers by Fisher mean", async () => {
  const rows = 8, cols = 8, v = 4;
  const rng = new Rng(3);
  const layer = (prefix: string, metricValue: number): VqLayerInput => ({
    prefix,
    weight: Float32Array.from({ length: rows * cols }, () => rng.normal()),
    rows,
    cols,
    groups: [{
      rows: Uint32Array.from({ length: rows }, (_, i) => i),
      codebookSize: 6,
      residualSize: 0,
    }],
    metric: new Float32Array(rows * cols).fill(metricValue),
    hessian: null,
    direction: null,
  });
  const settings = (): VqSettings => ({
    vectorLength: v,
    iterations: 5,
    seedRounds: 2,
    damp: 0.01,
    lambda: 0,
    edsgMode: "none",
    fisherMetric: "kfac",
    gpuUse: "never",
    gpu: null,
    rng: new Rng(11),
  });
  const layers = [layer("a", 1), layer("b", 3)];
  // Equal sizes and metric means 1 and 3: the scope mean is 2, so the factors are 0.5 and 1.5.
  for (const [lossUnits, factors] of [[true, [0.5, 1.5]], [false, [1, 1]]] as const) {
    const set = new ScopeTrainingSet("s", [{ codebookSize: 6, residualSize: 0 }], lossUnits);
    for (const l of layers) set.add(l, settings());
    const [[trained]] = await set.train(settings());
    const parts = layers.map((l) => layerTrainingVectors(l, settings())[0]);
    const points = new Float32Array([...parts[0].points, ...parts[1].points]);
    const weights = new Float32Array([
      ...parts[0].weights.map((w) => w * factors[0]),
      ...parts[1].weights.map((w) => w * factors[1]),
    ]);
    const expected = await weightedKmeans(points, weights, {
      k: 6,
      vectorLength: v,
      iterations: 5,
      seedRounds: 2,
      rng: new Rng(11),
      gpu: null,
    });
    assert.deepEqual(trained.codebook, expected.codebook.map(roundF16), `lossUnits ${lossUnits}`);
    assert.equal(trained.name, "codebooks.s.g0.s0");
  }
  const mismatched = new ScopeTrainingSet("s", [{ codebookSize: 5, residualSize: 0 }], true);
  assert.throws(() => mismatched.add(layers[0], settings()), /same channel groups/);
});
