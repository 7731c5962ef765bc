import assert from "node:assert/strict";
import { allocateBits, type AllocateOptions } from "../src/allocate/allocate_bits.ts";
import { type LayerFisherStats, memoryFisherStats } from "../src/allocate/fisher_source.ts";
import type { Plan } from "../src/allocate/plan.ts";
import { validatePlan } from "../src/allocate/plan.ts";
import { UsageError } from "../src/errors.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { bitsPerWeight, vqLayerBytes } from "../src/quantize/bpw.ts";
import { Rng } from "../src/util/rng.ts";
import { openQuantizedModel, unpackChannelOrder } from "../src/formats/quantized.ts";
import { loadModel } from "../src/model/load.ts";
import { validateWcsgPlan } from "../src/quantize/plan.ts";
import { quantizeModel } from "../src/quantize/quantize_model.ts";
import { STORIES_260K } from "./_helpers.ts";

/** A synthetic model: layer shapes, weights and Fisher statistics with sensitivities spread over decades. */
interface Fixture {
  shapes: [number, number][];
  weights: Map<string, { shape: number[]; data: Float32Array }>;
  stats: LayerFisherStats[];
}

const layerName = (i: number) => `model.layers.${i}.self_attn.q_proj`;

function randomFixture(rng: Rng, shapes: [number, number][]): Fixture {
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  const stats: LayerFisherStats[] = [];
  shapes.forEach(([rows, cols], i) => {
    const data = new Float32Array(rows * cols); // [rows, cols]
    for (let k = 0; k < data.length; k++) data[k] = rng.normal() / Math.sqrt(cols);
    weights.set(`${layerName(i)}.weight`, { shape: [rows, cols], data });
    const gDiag = Float32Array.from({ length: rows }, () => Math.exp(3 * rng.normal())); // [rows]
    const aDiag = Float32Array.from({ length: cols }, () => 0.5 + rng.next()); // [cols]
    stats.push({ name: layerName(i), rows, cols, gDiag, aDiag });
  });
  return { shapes, weights, stats };
}

function allocate(f: Fixture, options: AllocateOptions): Promise<Plan> {
  return allocateBits(memoryFisherStats("mem", f.stats), new MemoryWeightStore("mem", f.weights), {
    quiet: true,
    ...options,
  });
}

/**
 * Bits per weight of a plan recomputed directly with bpw.ts: scales always, a permutation
 * only for a layer with several groups whose order is not the identity.
 */
function recomputedBpw(plan: Plan, names = Object.keys(plan.layers)): number {
  return bitsPerWeight(names.map((name) => {
    const l = plan.layers[name];
    const bytes = vqLayerBytes({
      rows: l.rows,
      cols: l.cols,
      vectorLength: l.vectorLength,
      groups: l.groups.map((g) => ({ rows: g.end - g.start, codebookSize: g.codebookSize })),
      scales: true,
      permutation: l.groups.length > 1 && l.channelOrder.some((c, i) => c !== i),
    });
    return { bytes, weights: l.rows * l.cols };
  }));
}

/** Index bits per weight of channel `c` of a plan layer. */
function channelBits(plan: Plan, name: string, c: number): number {
  const layer = plan.layers[name];
  const position = layer.channelOrder.indexOf(c);
  const group = layer.groups.find((g) => g.start <= position && position < g.end)!;
  return Math.log2(group.codebookSize) / layer.vectorLength;
}

function randomShapes(rng: Rng, count: number): [number, number][] {
  return Array.from({ length: count }, () => [3 + rng.nextInt(80), 3 + rng.nextInt(120)]);
}

Deno.test("allocateBits never exceeds the budget", async () => {
  const rng = new Rng(21);
  let feasible = 0;
  for (let trial = 0; trial < 60; trial++) {
    const f = randomFixture(rng, randomShapes(rng, 1 + rng.nextInt(4)));
    const options: AllocateOptions = {
      bits: 1 + 7 * rng.next(),
      groups: 1 + rng.nextInt(6),
      vectorLength: [1, 2, 4, 8][rng.nextInt(4)],
      scope: rng.next() < 0.5 ? "layer" : "model",
      solver: (["auto", "exact", "greedy"] as const)[rng.nextInt(3)],
      searchGroups: rng.next() < 0.5,
    };
    const label = `trial ${trial}: ${JSON.stringify(options)} ${JSON.stringify(f.shapes)}`;
    let plan: Plan;
    try {
      plan = await allocate(f, options);
    } catch (err) {
      // The budget is unreachable only when even all-smallest codebooks exceed it.
      assert.ok(err instanceof UsageError, `${label}: ${err}`);
      const minimum = Number(/at least ([\d.]+) bits/.exec(err.message)?.[1]);
      assert.ok(
        minimum > options.bits,
        `${label}: claimed minimum ${minimum} is within the budget`,
      );
      continue;
    }
    feasible++;
    validatePlan(plan, label);
    assert.ok(plan.bpw <= options.bits, `${label}: plan bpw ${plan.bpw}`);
    assert.equal(recomputedBpw(plan), plan.bpw, label);
    if (options.scope === "layer") {
      for (const name of Object.keys(plan.layers)) {
        assert.ok(recomputedBpw(plan, [name]) <= options.bits, `${label}: layer ${name}`);
      }
    }
  }
  assert.ok(feasible >= 30, `only ${feasible} feasible trials: the test covers too little`);
});

Deno.test("allocateBits model scope spends exactly what it reports", async () => {
  const rng = new Rng(22);
  for (let trial = 0; trial < 10; trial++) {
    const f = randomFixture(rng, [[64, 64], [32, 64], [172, 64], [64, 172]]);
    const bits = 2 + 2 * rng.next();
    const model = await allocate(f, { bits, scope: "model" });
    const layer = await allocate(f, { bits, scope: "layer" });
    assert.equal(recomputedBpw(model), model.bpw);
    for (const [name, l] of Object.entries(model.layers)) {
      assert.equal(recomputedBpw(model, [name]), l.bpw);
    }
    assert.ok(model.bpw <= bits);
    assert.equal(model.solver, "exact");
    // The model-wide budget is a relaxation of the per-layer ones, so its modelled distortion is no larger.
    assert.ok(
      modelledDistortion(model) <= modelledDistortion(layer) * (1 + 1e-5),
      `trial ${trial}`,
    );
  }
});

/** Sum over groups of sum(I_c) * 2^(-2 log2(K) / v), from the plan's stored sensitivities. */
function modelledDistortion(plan: Plan): number {
  let total = 0;
  for (const l of Object.values(plan.layers)) {
    for (const g of l.groups) {
      let s = 0;
      for (let i = g.start; i < g.end; i++) s += l.sensitivity[l.channelOrder[i]];
      total += s * 2 ** ((-2 * Math.log2(g.codebookSize)) / l.vectorLength);
    }
  }
  return total;
}

/** Statistics whose trace sensitivities are bit-for-bit equal on every channel. */
function equalFixture(rng: Rng, shapes: [number, number][]): Fixture {
  const f = randomFixture(rng, shapes);
  shapes.forEach(([rows, cols], i) => {
    // Each row is a shuffle of the same symmetric integer multiset, so its mean is exactly 0
    // and its variance is exactly equal across rows whatever the summation order.
    const base = Array.from({ length: cols }, (_, j) => (j % 2 ? 1 : -1) * (1 + (j >> 1) % 3));
    if (cols % 2) base[cols - 1] = 0;
    const data = f.weights.get(`${layerName(i)}.weight`)!.data;
    for (let r = 0; r < rows; r++) {
      const row = [...base];
      for (let j = cols - 1; j > 0; j--) {
        const k = rng.nextInt(j + 1);
        [row[j], row[k]] = [row[k], row[j]];
      }
      data.set(row, r * cols);
    }
    f.stats[i].gDiag!.fill(1);
    f.stats[i].aDiag!.fill(0.5);
  });
  return f;
}

Deno.test("allocateBits gives equal sensitivities equal rates", async () => {
  const rng = new Rng(23);
  for (const scope of ["layer", "model"] as const) {
    for (let trial = 0; trial < 8; trial++) {
      // Model scope ties channels across layers only when the layers are interchangeable.
      const shapes: [number, number][] = scope === "layer"
        ? randomShapes(rng, 3).map(([m, n]) => [m, n + 64])
        : [[48, 96], [48, 96], [48, 96]];
      const f = equalFixture(rng, shapes);
      const plan = await allocate(f, {
        bits: 3 + 3 * rng.next(),
        groups: 1 + rng.nextInt(6),
        scope,
        searchGroups: trial % 2 === 1,
      });
      const rates = new Set<number>();
      for (const [name, layer] of Object.entries(plan.layers)) {
        const layerRates = new Set(
          Array.from({ length: layer.rows }, (_, c) => channelBits(plan, name, c)),
        );
        assert.equal(
          layerRates.size,
          1,
          `${scope} trial ${trial}: ${name} rates ${[...layerRates]}`,
        );
        rates.add([...layerRates][0]);
      }
      if (scope === "model") {
        assert.equal(rates.size, 1, `model trial ${trial}: rates ${[...rates]}`);
      }
    }
  }
});

Deno.test("allocateBits never lowers a channel's bits when its sensitivity doubles", async () => {
  const rng = new Rng(24);
  let raised = 0;
  for (let trial = 0; trial < 40; trial++) {
    const f = randomFixture(
      rng,
      randomShapes(rng, 1 + rng.nextInt(3)).map(([m, n]) => [m + 8, n + 64]),
    );
    const options: AllocateOptions = {
      bits: 3.5 + 3 * rng.next(),
      groups: 2 + rng.nextInt(4),
      scope: rng.next() < 0.5 ? "layer" : "model",
      solver: rng.next() < 0.5 ? "exact" : "greedy",
      searchGroups: rng.next() < 0.5,
    };
    const before = await allocate(f, options);
    const layer = rng.nextInt(f.stats.length), c = rng.nextInt(f.stats[layer].rows);
    // With the kfac trace sensitivity, I_c is proportional to G_cc.
    f.stats[layer] = { ...f.stats[layer], gDiag: f.stats[layer].gDiag!.slice() };
    f.stats[layer].gDiag![c] *= 2;
    const after = await allocate(f, options);
    const name = layerName(layer);
    const ratio = after.layers[name].sensitivity[c] / before.layers[name].sensitivity[c];
    assert.ok(Math.abs(ratio - 2) < 1e-5, `trial ${trial}: sensitivity ratio ${ratio}`);
    const b0 = channelBits(before, name, c), b1 = channelBits(after, name, c);
    assert.ok(
      b1 >= b0,
      `trial ${trial} ${
        JSON.stringify(options)
      }: channel ${c} of ${name} went from ${b0} to ${b1} bits`,
    );
    if (b1 > b0) raised++;
  }
  assert.ok(
    raised > 0,
    "no trial raised a channel's bits: the test does not exercise the allocation",
  );
});

Deno.test("allocateBits gives more bits to more sensitive groups", async () => {
  const f = randomFixture(new Rng(25), [[128, 96]]);
  const plan = await allocate(f, { bits: 3, groups: 4 });
  const sizes = plan.layers[layerName(0)].groups.map((g) => g.codebookSize);
  for (let g = 1; g < sizes.length; g++) {
    assert.ok(sizes[g] <= sizes[g - 1], `codebook sizes ${sizes}`);
  }
  assert.ok(
    sizes[0] > sizes.at(-1)!,
    `codebook sizes ${sizes} do not vary with sensitivity spread over decades`,
  );
});

Deno.test("allocateBits searchGroups trades codebooks for rates", async () => {
  const rng = new Rng(28);
  for (let trial = 0; trial < 6; trial++) {
    const f = randomFixture(rng, [[64, 64], [48, 64], [160, 64]]);
    // Near-equal sensitivities in layer 1: splitting it buys almost nothing but codebooks.
    f.stats[1].gDiag = Float32Array.from({ length: 48 }, () => 1 + 1e-3 * rng.next());
    const bits = 3 + 2 * rng.next();
    for (const scope of ["layer", "model"] as const) {
      const fixed = await allocate(f, { bits, groups: 4, scope });
      const searched = await allocate(f, { bits, groups: 4, scope, searchGroups: true });
      assert.ok(searched.bpw <= bits);
      assert.ok(
        modelledDistortion(searched) <= modelledDistortion(fixed) * (1 + 1e-5),
        `${scope} trial ${trial}: searching made the modelled loss worse`,
      );
      assert.equal(
        searched.layers[layerName(1)].groups.length,
        1,
        `${scope} trial ${trial}: near-equal channels kept ${
          searched.layers[layerName(1)].groups.length
        } codebooks`,
      );
      assert.equal(searched.searchGroups, true);
    }
  }
});

Deno.test("allocateBits reports the minimum bits for an unreachable budget", async () => {
  const f = randomFixture(new Rng(26), [[8, 12]]);
  await assert.rejects(
    () => allocate(f, { bits: 1, groups: 4, vectorLength: 4 }),
    (err: unknown) =>
      err instanceof UsageError && /at least [\d.]+ bits per weight/.test(err.message) &&
      err.message.includes(layerName(0)),
  );
});

Deno.test("allocateBits falls back to trace when gradients vanish", async () => {
  const f = randomFixture(new Rng(27), [[16, 64], [16, 64]]);
  f.stats[0].gradMean = new Float32Array(16 * 64); // all zero: nothing to steer by
  f.stats[1].gradMean = Float32Array.from({ length: 16 * 64 }, (_, i) => Math.sin(i));
  const plan = await allocate(f, { bits: 6, sensitivity: "gradient", groups: 2 });
  assert.equal(plan.layers[layerName(0)].sensitivityKind, "trace");
  assert.equal(plan.layers[layerName(1)].sensitivityKind, "gradient");
});

Deno.test("allocateBits uses one sensitivity form when bits move between layers", async () => {
  const f = randomFixture(new Rng(29), [[16, 64], [16, 64]]);
  f.stats[0].gradMean = new Float32Array(16 * 64); // all zero: falls back to trace
  f.stats[1].gradMean = Float32Array.from({ length: 16 * 64 }, (_, i) => Math.sin(i));
  const perLayer = await allocate(f, { bits: 6, sensitivity: "gradient", groups: 1 });
  assert.equal(perLayer.layers[layerName(1)].sensitivityKind, "gradient");
  const modelWide = await allocate(f, {
    bits: 6,
    sensitivity: "gradient",
    groups: 1,
    scope: "model",
  });
  assert.equal(modelWide.layers[layerName(0)].sensitivityKind, "trace");
  assert.equal(modelWide.layers[layerName(1)].sensitivityKind, "trace");
  const byDefault = await allocate(f, { bits: 6, groups: 1, scope: "model" });
  assert.equal(byDefault.sensitivity, "trace");
});

Deno.test("allocateBits plan bpw equals the quantized file's bpw on a 64-row layer", async () => {
  const model = await loadModel(STORIES_260K);
  const prefix = "model.layers.0.self_attn.q_proj"; // [64, 64]
  const rng = new Rng(31);
  const stats: LayerFisherStats[] = [{
    name: prefix,
    rows: 64,
    cols: 64,
    gDiag: Float32Array.from({ length: 64 }, () => Math.exp(3 * rng.normal())), // [64]
    aDiag: Float32Array.from({ length: 64 }, () => 0.5 + rng.next()), // [64]
  }];
  const dir = await Deno.makeTempDir();
  try {
    for (const groups of [1, 4]) {
      const plan = await allocateBits(memoryFisherStats("mem", stats), model.weights, {
        bits: 3,
        groups,
        vectorLength: 2,
        scope: "layer",
        layers: [prefix],
        quiet: true,
      });
      const layer = plan.layers[prefix];
      assert.equal(layer.groups.length, groups);
      const out = `${dir}/q${groups}.safetensors`;
      const result = await quantizeModel(model, null, {
        method: "kmeans",
        bits: 3,
        plan: validateWcsgPlan(plan, "plan"),
        out,
        layers: [prefix],
        quiet: true,
        gpu: null,
        iterations: 2,
      });
      assert.equal(result.bpw, plan.bpw, `${groups} groups`);
      assert.equal(result.bpw, layer.bpw, `${groups} groups`);
      const q = await openQuantizedModel(out);
      const desc = q.layers[prefix];
      assert.ok(desc.kind === "vq");
      // One group stores no permutation; four store 64 entries of 6 bits (48 bytes).
      assert.equal(desc.channelOrder, groups > 1);
      assert.equal(result.layers[0].bytes.permutation, groups > 1 ? 48 : 0);
      const names = [
        `${prefix}.scales`,
        ...(desc.channelOrder ? [`${prefix}.channel_order`] : []),
        ...desc.groups.flatMap((g) => g.stages.flatMap((st) => [st.indices, st.codebook])),
      ];
      const stored = names.reduce((sum, name) => sum + q.file.info(name).byteLength, 0);
      assert.equal((stored * 8) / (64 * 64), plan.bpw, `${groups} groups: file bytes`);
      // The stored order is the plan's, and the file dequantizes through it.
      if (desc.channelOrder) {
        const words = new Uint32Array(
          (await q.file.readBytes(`${prefix}.channel_order`)).slice().buffer,
        );
        assert.deepEqual(Array.from(unpackChannelOrder(words, 64)), layer.channelOrder);
      }
      assert.equal((await q.weights.read(`${prefix}.weight`)).length, 64 * 64);
      q.weights.close();
    }
  } finally {
    model.weights.close();
    await Deno.remove(dir, { recursive: true });
  }
});
