import assert from "node:assert/strict";
import { allocateBits, type AllocateOptions } from "../src/allocate/allocate_bits.ts";
import { type LayerFisherStats, memoryFisherStats } from "../src/allocate/fisher_source.ts";
import type { Plan } from "../src/allocate/plan.ts";
import { UsageError } from "../src/errors.ts";
import { loadModel } from "../src/model/load.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { quantizeModel } from "../src/quantize/quantize_model.ts";
import { syntheticStatistics } from "../src/quantize/statistics.ts";
import { trialQuantization } from "../src/quantize/trial.ts";
import { Rng } from "../src/util/rng.ts";
import { STORIES_260K } from "./_helpers.ts";

/** Two blocks of two 64x64 projections: one knapsack item per block with block codebooks. */
const LAYERS = [0, 1].flatMap((b) =>
  ["self_attn.q_proj", "mlp.down_proj"].map((t) => `model.layers.${b}.${t}`)
);
const ROWS = 64, COLS = 64;

function fixture(): { weights: MemoryWeightStore; stats: LayerFisherStats[] } {
  const rng = new Rng(21);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const stats: LayerFisherStats[] = [];
  for (const name of LAYERS) {
    const data = Float32Array.from({ length: ROWS * COLS }, () => rng.normal() / 8); // [rows, cols]
    tensors.set(`${name}.weight`, { shape: [ROWS, COLS], data });
    // Block 0 is rated ten times as sensitive as block 1.
    const g = name.includes(".0.") ? 10 : 1;
    stats.push({
      name,
      rows: ROWS,
      cols: COLS,
      gDiag: new Float32Array(ROWS).fill(g),
      aDiag: new Float32Array(COLS).fill(1),
    });
  }
  return { weights: new MemoryWeightStore("mem", tensors), stats };
}

/**
 * Builds a fake trial whose per-layer errors fall `perDoubling` times per doubling of K
 * (from 1 at K = 2), scaled by `blockScale[block]`. It records the sizes requested.
 */
function fakeTrial(perDoubling: number, blockScale: [number, number]) {
  const requested: number[] = [];
  const run = (codebookSize: number) => {
    requested.push(codebookSize);
    const base = perDoubling ** -(Math.log2(codebookSize) - 1);
    return Promise.resolve(
      new Map(LAYERS.map((n) => [n, base * blockScale[n.includes(".0.") ? 0 : 1]])),
    );
  };
  return { run, requested };
}

const blockSizes = (plan: Plan) =>
  [0, 1].map((b) => plan.layers[`model.layers.${b}.self_attn.q_proj`].groups[0].codebookSize);

function allocate(options: Partial<AllocateOptions>): Promise<Plan> {
  const f = fixture();
  return allocateBits(memoryFisherStats("mem", f.stats), f.weights, {
    bits: 2,
    groups: 1,
    scope: "model",
    codebookScope: "block",
    quiet: true,
    ...options,
  });
}

/** Codebook sizes of both blocks that minimize the fake trial's total error within the plan's bytes. */
function bestByEnumeration(perDoubling: number, scale: [number, number], sizes: number[][]) {
  const error = (k: number, b: number) => perDoubling ** -(Math.log2(k) - 1) * scale[b] * 2;
  return sizes.reduce((a, b) =>
    error(b[0], 0) + error(b[1], 1) < error(a[0], 0) + error(a[1], 1) ? b : a
  );
}

Deno.test("allocateBits with measured distortion follows the trial errors, not the model", async () => {
  const model = await allocate({});
  // the model rates block 0 ten times higher and gives it a larger codebook
  const [m0, m1] = blockSizes(model);
  assert.ok(m0 > m1, `model plan ${m0} / ${m1}`);

  // errors that fall 4x per doubling and rate the blocks equal: equal sizes are best
  const steep = fakeTrial(4, [1, 1]);
  const plan = await allocate({ distortion: "measured", trial: steep.run });
  assert.equal(plan.distortion, "measured");
  assert.ok(plan.bpw <= 2);
  const [s0, s1] = blockSizes(plan);
  assert.ok(Math.abs(Math.log2(s0) - Math.log2(s1)) <= 1, `measured plan ${s0} / ${s1}`);
  // no pair of sizes within the plan's bytes does better under the trial errors
  const candidates = [[s0, s1], [s0 * 2, s1 / 2], [s0 / 2, s1 * 2]].filter(([a, b]) =>
    a >= 2 && b >= 2
  );
  const best = bestByEnumeration(4, [1, 1], candidates);
  assert.deepEqual([s0, s1], best);

  // three sizes in the first round, more only where the choice was not measured yet
  assert.ok(steep.requested.length >= 3, `requested ${steep.requested}`);
  assert.ok(steep.requested.length <= 5, `requested ${steep.requested}`);
  for (const k of [s0, s1]) {
    assert.ok(steep.requested.includes(k), `${k} was measured (${steep.requested})`);
  }
  const u = steep.requested[1]; // the largest size both blocks can take at once
  assert.deepEqual(steep.requested.slice(0, 3), [u / 2, u, u * 2]);
  assert.ok(Math.min(s0, s1) >= u / 2, `${s0} / ${s1} near ${u}`);
  assert.ok(Math.max(s0, s1) <= u * 2, `${s0} / ${s1} near ${u}`);
});

Deno.test("allocateBits with measured distortion moves bits to the block whose trial error is higher", async () => {
  // block 1 (rated lower by the model) leaves 20 times the error of block 0 in the trials
  const trial = fakeTrial(2.5, [1, 20]);
  const plan = await allocate({ distortion: "measured", trial: trial.run });
  const [s0, s1] = blockSizes(plan);
  assert.ok(s1 > s0, `measured plan ${s0} / ${s1}`);
});

Deno.test("allocateBits skips trials where no bits can move", async () => {
  const trial = fakeTrial(4, [1, 1]);
  const perLayer = await allocate({
    distortion: "measured",
    trial: trial.run,
    scope: "layer",
    codebookScope: "layer",
  });
  assert.equal(trial.requested.length, 0);
  const model = await allocate({ scope: "layer", codebookScope: "layer" });
  assert.deepEqual(blockSizes(perLayer), blockSizes(model));
});

Deno.test("allocateBits measures only codebook sizes a group offers", async () => {
  // at the lowest budget every block takes K = 2, the smallest size offered
  const trial = fakeTrial(2.5, [1, 1]);
  const plan = await allocate({ bits: 1, distortion: "measured", trial: trial.run });
  assert.ok(plan.bpw <= 1);
  assert.ok(trial.requested.length > 0);
  for (const k of trial.requested) assert.ok(k >= 2, `requested K = ${k}`);
});

Deno.test("allocateBits rejects measured distortion without a trial or with several groups", async () => {
  await assert.rejects(allocate({ distortion: "measured" }), UsageError);
  const trial = fakeTrial(2, [1, 1]);
  await assert.rejects(
    allocate({ distortion: "measured", trial: trial.run, groups: 2 }),
    (err: Error) => err instanceof UsageError && /--groups 1/.test(err.message),
  );
  assert.equal(trial.requested.length, 0, "no trial runs before the options are checked");
});

Deno.test("trialQuantization reports the Fisher errors quantizeModel reports at that size", async () => {
  const model = await loadModel(STORIES_260K);
  try {
    const prefixes = [...model.weights.names()]
      .filter((n) => /^model\.layers\.\d+\..*_proj\.weight$/.test(n))
      .map((n) => n.slice(0, -".weight".length));
    const shapes = prefixes.map((prefix) => {
      const [rows, cols] = model.weights.shape(`${prefix}.weight`);
      return { prefix, rows, cols };
    });
    const stats = syntheticStatistics(shapes, new Rng(17));
    const trial = trialQuantization(model, stats, {
      codebookScope: "block",
      vectorLength: 4,
      seed: 3,
      gpu: null,
    });
    const small = await trial(16), large = await trial(64);
    // a codebook larger than a 32x64 layer's vectors costs over 16 bits per weight
    const perLayer = trialQuantization(model, stats, { codebookScope: "layer", vectorLength: 4 });
    const huge = await perLayer(1024);
    for (const [prefix, e] of huge) assert.ok(Number.isFinite(e), `${prefix}: ${e}`);
    assert.deepEqual([...small.keys()].sort(), [...prefixes].sort());
    const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    assert.ok(total(large) < total(small), `${total(large)} < ${total(small)}`);

    const dir = await Deno.makeTempDir();
    try {
      const result = await quantizeModel(model, stats, {
        method: "rsavq",
        bits: 16,
        codebookSize: 64,
        codebookScope: "block",
        out: `${dir}/q.safetensors`,
        seed: 3,
        quiet: true,
        gpu: null,
      });
      for (const r of result.layers) assert.equal(large.get(r.prefix), r.fisherError, r.prefix);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  } finally {
    model.weights.close();
  }
});
