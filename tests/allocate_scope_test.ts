import assert from "node:assert/strict";
import { allocateBits, type AllocateOptions } from "../src/allocate/allocate_bits.ts";
import { type LayerFisherStats, memoryFisherStats } from "../src/allocate/fisher_source.ts";
import { type Plan, planBytes, validatePlan } from "../src/allocate/plan.ts";
import { FormatError, UsageError } from "../src/errors.ts";
import { openQuantizedModel } from "../src/formats/quantized.ts";
import { loadModel } from "../src/model/load.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { codebookBytes, vqLayerBytes } from "../src/quantize/bpw.ts";
import { planCodebookScope, validateWcsgPlan } from "../src/quantize/plan.ts";
import { quantizeModel } from "../src/quantize/quantize_model.ts";
import { CODEBOOK_SCOPES, type CodebookScope, groupLayersByScope } from "../src/quantize/scope.ts";
import { syntheticStatistics } from "../src/quantize/statistics.ts";
import { Rng } from "../src/util/rng.ts";
import { STORIES_260K } from "./_helpers.ts";

/** Two blocks of three projections each, with shapes that differ across types. */
const LAYERS: { name: string; rows: number; cols: number }[] = [0, 1].flatMap((b) => [
  { name: `model.layers.${b}.self_attn.q_proj`, rows: 32, cols: 32 },
  { name: `model.layers.${b}.self_attn.k_proj`, rows: 16, cols: 32 },
  { name: `model.layers.${b}.mlp.down_proj`, rows: 32, cols: 48 },
]);

interface Fixture {
  weights: Map<string, { shape: number[]; data: Float32Array }>;
  stats: LayerFisherStats[];
}

/** Random weights [rows, cols] and K-FAC diagonals with sensitivities spread over decades. */
function fixture(seed: number, layers = LAYERS, same = false): Fixture {
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  const stats: LayerFisherStats[] = [];
  let rng = new Rng(seed);
  for (const { name, rows, cols } of layers) {
    if (same) rng = new Rng(seed); // every layer gets the same weights and statistics
    const data = Float32Array.from({ length: rows * cols }, () => rng.normal() / Math.sqrt(cols)); // [rows, cols]
    weights.set(`${name}.weight`, { shape: [rows, cols], data });
    const gDiag = Float32Array.from({ length: rows }, () => Math.exp(2 * rng.normal())); // [rows]
    const aDiag = Float32Array.from({ length: cols }, () => 0.5 + rng.next()); // [cols]
    stats.push({ name, rows, cols, gDiag, aDiag });
  }
  return { weights, stats };
}

function allocate(f: Fixture, options: AllocateOptions): Promise<Plan> {
  return allocateBits(memoryFisherStats("mem", f.stats), new MemoryWeightStore("mem", f.weights), {
    quiet: true,
    scope: "model",
    ...options,
  });
}

/**
 * Bytes of a plan recomputed from bpw.ts alone: each layer's indices, scales and
 * permutation, and per scope one codebook per group rank (or per layer and group when the
 * scope is "layer").
 */
function recomputedBytes(plan: Plan, scope: CodebookScope): number {
  let bytes = 0;
  for (const l of Object.values(plan.layers)) {
    bytes += vqLayerBytes({
      rows: l.rows,
      cols: l.cols,
      vectorLength: l.vectorLength,
      groups: l.groups.map((g) => ({
        rows: g.end - g.start,
        codebookSize: g.codebookSize,
        ownsCodebook: scope === "layer",
      })),
      scales: true,
      permutation: l.groups.length > 1 && l.channelOrder.some((c, i) => c !== i),
    }).total;
  }
  if (scope !== "layer") {
    for (const group of groupLayersByScope(Object.keys(plan.layers), scope)) {
      const first = plan.layers[group.prefixes[0]];
      for (const g of first.groups) bytes += codebookBytes(g.codebookSize, first.vectorLength);
    }
  }
  return bytes;
}

const weightCount = (plan: Plan) =>
  Object.values(plan.layers).reduce((n, l) => n + l.rows * l.cols, 0);

Deno.test("allocateBits with any codebook scope never exceeds the budget and shares sizes by rank", async () => {
  const f = fixture(3);
  for (const codebookScope of CODEBOOK_SCOPES) {
    for (const groups of [1, 3]) {
      for (const bits of [1.5, 2, 3, 4.25]) {
        const what = `${codebookScope}, ${groups} groups, ${bits} bits`;
        const plan = await allocate(f, { bits, groups, codebookScope });
        assert.equal(plan.codebookScope, codebookScope, what);
        assert.ok(plan.bpw <= bits, `${what}: ${plan.bpw}`);
        const stored = recomputedBytes(plan, codebookScope);
        assert.equal(plan.bpw, (stored * 8) / weightCount(plan), what);
        validatePlan(JSON.parse(JSON.stringify(plan)), "plan.json");
        // Per-layer bpw (shared codebooks apportioned by weights) adds up to the whole.
        const bits8 = Object.values(plan.layers).reduce((n, l) => n + l.bpw * l.rows * l.cols, 0);
        assert.ok(Math.abs(bits8 / weightCount(plan) - plan.bpw) < 1e-9, what);
        for (const group of groupLayersByScope(Object.keys(plan.layers), codebookScope)) {
          const sizes = group.prefixes.map((p) =>
            plan.layers[p].groups.map((g) => g.codebookSize).join(",")
          );
          assert.equal(new Set(sizes).size, 1, `${what}: ${group.key} ${sizes.join(" / ")}`);
          for (const p of group.prefixes) assert.equal(plan.layers[p].groups.length, groups, what);
        }
      }
    }
  }
});

Deno.test("allocateBits counts a shared codebook once", async () => {
  const layers = [0, 1, 2, 3].map((b) => ({
    name: `model.layers.${b}.self_attn.q_proj`,
    rows: 32,
    cols: 32,
  }));
  const f = fixture(5, layers, true); // four identical layers
  const bits = 2.5;
  const own = await allocate(f, { bits, groups: 1, codebookScope: "layer" });
  const shared = await allocate(f, { bits, groups: 1, codebookScope: "model" });
  const ownK = Object.values(own.layers).map((l) => l.groups[0].codebookSize);
  assert.equal(new Set(ownK).size, 1, "identical layers get identical sizes");
  // The same layouts cost three codebooks less when one codebook serves all four layers.
  const saved = planBytes(own.layers, "layer").total - planBytes(own.layers, "model").total;
  assert.equal(saved, 3 * codebookBytes(ownK[0], 4));
  // So the shared plan can afford a codebook at least as large, and never spends more bits.
  const sharedK = shared.layers[layers[0].name].groups[0].codebookSize;
  assert.ok(sharedK >= ownK[0], `shared K ${sharedK} < own K ${ownK[0]}`);
  assert.ok(sharedK > ownK[0], "the three codebooks saved buy a larger shared codebook here");
  assert.ok(shared.bpw <= bits, `shared ${shared.bpw}`);
  assert.ok(own.bpw <= bits, `own ${own.bpw}`);
  // Its stored bytes: four layers' indices and scales, and the codebook once.
  const perLayer = vqLayerBytes({
    rows: 32,
    cols: 32,
    vectorLength: 4,
    groups: [{ rows: 32, codebookSize: sharedK, ownsCodebook: false }],
  }).total;
  assert.equal(shared.bpw, ((4 * perLayer + codebookBytes(sharedK, 4)) * 8) / (4 * 32 * 32));
});

Deno.test("allocateBits with the layer codebook scope matches the default", async () => {
  const f = fixture(7);
  for (const groups of [1, 4]) {
    const plain = await allocate(f, { bits: 2.5, groups });
    const layer = await allocate(f, { bits: 2.5, groups, codebookScope: "layer" });
    assert.deepEqual(layer, plain);
  }
});

Deno.test("allocateBits rejects shared codebooks with a per-layer budget or a group search", async () => {
  const f = fixture(9);
  await assert.rejects(
    allocate(f, { bits: 3, codebookScope: "block", scope: "layer" }),
    (e: unknown) => e instanceof UsageError && e.message.includes("--scope model"),
  );
  await assert.rejects(
    allocate(f, { bits: 3, codebookScope: "type", searchGroups: true }),
    (e: unknown) => e instanceof UsageError && e.message.includes("--search-groups"),
  );
  await assert.rejects(
    allocate(f, { bits: 0.5, codebookScope: "model" }),
    (e: unknown) =>
      e instanceof UsageError && /needs at least [\d.]+ bits per weight/.test(e.message),
  );
});

Deno.test("validatePlan rejects a shared plan whose scope disagrees or whose bpw ignores sharing", async () => {
  const plan = await allocate(fixture(11), { bits: 3, groups: 2, codebookScope: "type" });
  const copy = () => JSON.parse(JSON.stringify(plan));
  const edited = copy();
  edited.layers["model.layers.1.self_attn.q_proj"].groups[0].codebookSize *= 2;
  assert.throws(
    () => validatePlan(edited, "p.json"),
    (e: unknown) =>
      e instanceof FormatError &&
      e.message.includes("layers.model.layers.1.self_attn.q_proj.groups"),
  );
  const unshared = copy();
  unshared.codebookScope = "layer"; // same layout, each layer owning its codebooks: more bytes
  assert.throws(
    () => validatePlan(unshared, "p.json"),
    (e: unknown) => e instanceof FormatError && e.message.includes("bpw"),
  );
  const perLayer = copy();
  perLayer.scope = "layer";
  assert.throws(
    () => validatePlan(perLayer, "p.json"),
    (e: unknown) => e instanceof FormatError && e.message.includes("scope"),
  );
  // quantize follows the plan's scope and refuses another.
  const wcsg = validateWcsgPlan(copy(), "p.json");
  assert.equal(planCodebookScope(wcsg, undefined), "type");
  assert.equal(planCodebookScope(wcsg, "type"), "type");
  assert.throws(
    () => planCodebookScope(wcsg, "model"),
    (e: unknown) => e instanceof UsageError && e.message.includes("type"),
  );
  assert.equal(
    planCodebookScope(
      validateWcsgPlan({ ...copy(), codebookScope: undefined }, "p.json"),
      undefined,
    ),
    "layer",
  );
});

Deno.test("allocateBits shared plan bpw equals the rsavq file's bpw on stories260K", async () => {
  const model = await loadModel(STORIES_260K);
  const prefixes = [...model.weights.names()]
    .filter((n) => /^model\.layers\.[01]\..*_proj\.weight$/.test(n))
    .map((n) => n.slice(0, -".weight".length));
  const shapes = prefixes.map((prefix) => {
    const [rows, cols] = model.weights.shape(`${prefix}.weight`);
    return { prefix, rows, cols };
  });
  const quantStats = syntheticStatistics(shapes, new Rng(13));
  const fisher: LayerFisherStats[] = [];
  for (const { prefix, rows, cols } of shapes) {
    const s = await quantStats.layer(prefix);
    const aDiag = Float32Array.from({ length: cols }, (_, j) => s.A[j * cols + j]); // [cols]
    fisher.push({ name: prefix, rows, cols, aDiag, gDiag: s.gDiag });
  }
  const dir = await Deno.makeTempDir();
  try {
    for (const codebookScope of ["type", "model"] as const) {
      const plan = await allocateBits(memoryFisherStats("mem", fisher), model.weights, {
        bits: 3,
        groups: 2,
        scope: "model",
        codebookScope,
        layers: prefixes,
        quiet: true,
      });
      const wcsg = validateWcsgPlan(JSON.parse(JSON.stringify(plan)), "plan.json");
      const out = `${dir}/${codebookScope}.safetensors`;
      const result = await quantizeModel(model, quantStats, {
        method: "rsavq",
        bits: 3,
        plan: wcsg,
        codebookScope: planCodebookScope(wcsg, undefined),
        out,
        layers: prefixes,
        quiet: true,
        gpu: null,
        iterations: 2,
        seedRounds: 2,
      });
      assert.equal(result.codebookScope, codebookScope);
      assert.equal(result.bpw, plan.bpw, codebookScope);
      const expectedShared = groupLayersByScope(prefixes, codebookScope).length * 2;
      assert.equal(result.sharedCodebooks.length, expectedShared);
      assert.equal(result.sharedBytes, planBytes(plan.layers, codebookScope).sharedBytes);
      // The file's quantized tensors, shared codebooks once, give the same bits.
      const q = await openQuantizedModel(out);
      let stored = result.sharedCodebooks.reduce((n, c) => n + q.file.info(c.name).byteLength, 0);
      for (const prefix of prefixes) {
        const desc = q.layers[prefix];
        assert.ok(desc.kind === "vq");
        const names = [
          `${prefix}.scales`,
          ...(desc.channelOrder ? [`${prefix}.channel_order`] : []),
          ...desc.groups.flatMap((g) => g.stages.map((st) => st.indices)),
        ];
        stored += names.reduce((n, name) => n + q.file.info(name).byteLength, 0);
      }
      const weights = shapes.reduce((n, s) => n + s.rows * s.cols, 0);
      assert.equal((stored * 8) / weights, plan.bpw, `${codebookScope}: file bytes`);
      q.weights.close();
    }
  } finally {
    model.weights.close();
    await Deno.remove(dir, { recursive: true });
  }
});
