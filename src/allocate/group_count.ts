/**
 * Choosing how many channel groups (codebooks) each layer gets. More groups let rates
 * follow the sensitivities more closely, but every group stores its own codebook, which on
 * small layers can cost more than the better rates save. When the search is on, each layer
 * picks among its candidate groupings (1..G groups) the one the rate-distortion model
 * prefers under the budget.
 *
 * @module
 */
import {
  budgetBytes,
  groupDistortion,
  type LayerGrouping,
  type LayerWork,
  minimumBytes,
  solveGroups,
  type SolveSettings,
} from "./_layer_work.ts";

/** Relative tolerance under which a grouping with more groups does not count as better. */
const TIE = 1e-12;

/**
 * Sets every layer's `grouping` to the candidate with the least modelled loss under the
 * budget. With `scope` "layer", each layer tries each candidate with the exact solver.
 * With `scope` "model", a Lagrangian sweep picks each layer's candidate at the multiplier
 * where the whole model fits, and the caller then solves the codebook sizes exactly for
 * the chosen groupings. Ties go to fewer groups. A layer that fits with no candidate gets
 * its cheapest, so that the infeasibility message reports the true minimum.
 *
 * @param work Layers with their candidate groupings, fewest groups first.
 * @param s Budget, scope and solver settings.
 */
export function chooseGroupCounts(
  work: LayerWork[],
  s: SolveSettings & { scope: "layer" | "model" },
): void {
  if (work.every((l) => l.candidates.length === 1)) return;
  if (s.scope === "layer") {
    for (const layer of work) layer.grouping = bestForLayer(layer, s);
    return;
  }
  chooseForModel(work, s);
}

function bestForLayer(layer: LayerWork, s: SolveSettings): LayerGrouping {
  const budget = budgetBytes(s.bits, layer.rows * layer.cols);
  let best: LayerGrouping | null = null, bestDistortion = Infinity;
  for (const candidate of layer.candidates) {
    if (minimumBytes(layer, candidate) > budget) continue;
    const { distortion } = solveGroups(candidate.groups, budget - candidate.fixedBytes, s);
    if (distortion < bestDistortion * (1 - TIE)) [best, bestDistortion] = [candidate, distortion];
  }
  return best ?? cheapest(layer);
}

function cheapest(layer: LayerWork): LayerGrouping {
  return layer.candidates.reduce((
    a,
    b,
  ) => (minimumBytes(layer, b) < minimumBytes(layer, a) ? b : a));
}

/**
 * Lagrangian cost and bytes of a grouping when each group minimizes distortion + lambda *
 * bytes. The grouping's fixed bytes (scales, permutation) count too, because a grouping
 * with one group stores no permutation.
 */
function relaxed(
  grouping: LayerGrouping,
  lambda: number,
  v: number,
): { cost: number; bytes: number } {
  let cost = lambda * grouping.fixedBytes, bytes = grouping.fixedBytes;
  for (const g of grouping.groups) {
    let bestCost = Infinity, bestBytes = 0;
    for (const o of g.options) {
      const c = groupDistortion(g, o, v) + lambda * o.bytes;
      if (c < bestCost) [bestCost, bestBytes] = [c, o.bytes];
    }
    cost += bestCost;
    bytes += bestBytes;
  }
  return { cost, bytes };
}

function chooseForModel(work: LayerWork[], s: SolveSettings): void {
  const weights = work.reduce((sum, l) => sum + l.rows * l.cols, 0);
  const budget = budgetBytes(s.bits, weights);
  const pick = (lambda: number) =>
    work.map((layer) => {
      let best = layer.candidates[0], bestCost = Infinity, bestBytes = 0;
      for (const candidate of layer.candidates) {
        const r = relaxed(candidate, lambda, s.vectorLength);
        if (r.cost < bestCost * (1 - TIE)) {
          [best, bestCost, bestBytes] = [candidate, r.cost, r.bytes];
        }
      }
      return { grouping: best, bytes: bestBytes };
    });
  const fits = (lambda: number) => pick(lambda).reduce((sum, p) => sum + p.bytes, 0) <= budget;

  let chosen: LayerGrouping[];
  if (fits(0)) {
    chosen = pick(0).map((p) => p.grouping);
  } else {
    // Bisect log(lambda) between a multiplier that overspends and one that fits.
    let hi = 1, rounds = 0;
    while (!fits(hi) && rounds++ < 200) hi *= 16;
    if (!fits(hi)) {
      for (const layer of work) layer.grouping = cheapest(layer);
      return;
    }
    let lo = hi;
    while (lo > 1e-300 && fits(lo)) lo /= 16;
    for (let iter = 0; iter < 100 && hi / lo > 1 + 1e-9; iter++) {
      const mid = Math.sqrt(lo * hi);
      if (fits(mid)) hi = mid;
      else lo = mid;
    }
    chosen = pick(hi).map((p) => p.grouping);
  }
  work.forEach((layer, i) => (layer.grouping = chosen[i]));
}
