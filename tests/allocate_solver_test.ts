import assert from "node:assert/strict";
import { type RdItem, solveRateDistortion } from "../src/allocate/rate_distortion.ts";
import { groupChannels } from "../src/allocate/grouping.ts";
import { UsageError } from "../src/errors.ts";
import { Rng } from "../src/util/rng.ts";

/** Random items: 2-6 options each, bytes strictly increasing in steps of 4, distortion decreasing. */
function randomItems(rng: Rng, count: number): RdItem[] {
  return Array.from({ length: count }, () => {
    const n = 2 + rng.nextInt(5);
    let bytes = 4 * (1 + rng.nextInt(10)), distortion = 1 + 10 * rng.next();
    return {
      options: Array.from({ length: n }, () => {
        const option = { bytes, distortion };
        bytes += 4 * (1 + rng.nextInt(8));
        distortion *= 0.2 + 0.7 * rng.next();
        return option;
      }),
    };
  });
}

/** Minimum distortion over every combination of options that fits, by enumeration. */
function bruteForce(items: RdItem[], budget: number): number {
  let best = Infinity;
  const visit = (i: number, bytes: number, distortion: number) => {
    if (bytes > budget) return;
    if (i === items.length) {
      best = Math.min(best, distortion);
      return;
    }
    for (const o of items[i].options) visit(i + 1, bytes + o.bytes, distortion + o.distortion);
  };
  visit(0, 0, 0);
  return best;
}

Deno.test("solveRateDistortion exact matches enumeration", () => {
  const rng = new Rng(11);
  for (let trial = 0; trial < 200; trial++) {
    const items = randomItems(rng, 1 + rng.nextInt(4));
    const min = items.reduce((s, it) => s + it.options[0].bytes, 0);
    const max = items.reduce((s, it) => s + it.options.at(-1)!.bytes, 0);
    const budget = min + rng.nextInt(max - min + 8);
    const solution = solveRateDistortion(items, budget, { solver: "exact" });
    assert.ok(
      solution.bytes <= budget,
      `trial ${trial}: ${solution.bytes} bytes over budget ${budget}`,
    );
    const expected = bruteForce(items, budget);
    assert.ok(
      Math.abs(solution.distortion - expected) <= 1e-12 * expected,
      `trial ${trial}: ${solution.distortion} != ${expected}`,
    );
    assert.equal(solution.solver, "exact");
  }
});

Deno.test("solveRateDistortion greedy stays within budget", () => {
  const rng = new Rng(12);
  for (let trial = 0; trial < 200; trial++) {
    const items = randomItems(rng, 1 + rng.nextInt(6));
    const min = items.reduce((s, it) => s + it.options[0].bytes, 0);
    const max = items.reduce((s, it) => s + it.options.at(-1)!.bytes, 0);
    const budget = min + rng.nextInt(max - min + 8);
    const greedy = solveRateDistortion(items, budget, { solver: "greedy" });
    const exact = solveRateDistortion(items, budget, { solver: "exact" });
    assert.ok(
      greedy.bytes <= budget,
      `trial ${trial}: ${greedy.bytes} bytes over budget ${budget}`,
    );
    assert.ok(
      greedy.distortion >= exact.distortion * (1 - 1e-12),
      `trial ${trial}: greedy beat the optimum`,
    );
    // Greedy leaves no single-step upgrade that would still fit.
    greedy.choice.forEach((o, i) => {
      const up = items[i].options[o + 1];
      if (up) {
        assert.ok(
          greedy.bytes - items[i].options[o].bytes + up.bytes > budget,
          `trial ${trial}: item ${i} could still upgrade`,
        );
      }
    });
  }
});

Deno.test("solveRateDistortion auto falls back to greedy on large tables", () => {
  const rng = new Rng(13);
  const items = randomItems(rng, 5);
  const budget = items.reduce((s, it) => s + it.options[1].bytes, 0);
  assert.equal(solveRateDistortion(items, budget, { maxTableCells: 1 }).solver, "greedy");
  assert.equal(solveRateDistortion(items, budget).solver, "exact");
});

Deno.test("solveRateDistortion rejects a budget below the cheapest options", () => {
  const items = [{ options: [{ bytes: 8, distortion: 1 }] }, {
    options: [{ bytes: 8, distortion: 1 }],
  }];
  assert.throws(
    () => solveRateDistortion(items, 15),
    (err: unknown) => err instanceof UsageError && /16 bytes/.test(err.message),
  );
});

Deno.test("groupChannels splits sorted channels into equal groups", () => {
  // sensitivity                                 groups  order                 ends
  const cases: [number[], number, number[], number[]][] = [
    [[5, 1, 4, 2, 3, 0], 3, [0, 2, 4, 3, 1, 5], [2, 4, 6]],
    [[1, 2, 3, 4, 5], 2, [4, 3, 2, 1, 0], [3, 5]],
    [[1, 2], 4, [1, 0], [1, 2]],
    [[3, 3, 3, 3], 2, [0, 1, 2, 3], [4]],
    [[4, 3, 3, 1], 2, [0, 1, 2, 3], [3, 4]],
  ];
  for (const [sensitivity, groups, order, ends] of cases) {
    const g = groupChannels(new Float64Array(sensitivity), groups);
    assert.deepEqual(g.order, order, `order of ${sensitivity}`);
    assert.deepEqual(g.ends, ends, `ends of ${sensitivity}`);
  }
});
