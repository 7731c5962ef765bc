/**
 * Discrete rate-distortion allocation under a byte budget: a multiple-choice knapsack.
 *
 * Each item (a group of output channels, or several identical groups that must move
 * together) offers a few options, each with an exact byte cost and a modelled distortion.
 * The solver picks one option per item so that the total bytes never exceed the budget and
 * the total distortion is as small as possible.
 *
 * Two solvers share one interface:
 * - `exact`: dynamic programming over the bytes above every item's cheapest option, in
 *   steps of the greatest common divisor of the costs. It returns the true optimum and is
 *   used whenever its table fits in `maxTableCells`.
 * - `greedy`: a Lagrangian sweep (each item independently minimizes distortion + lambda *
 *   bytes, with lambda bisected to the smallest value that fits), then single-step upgrades
 *   by best distortion saved per byte while any fits. It is not always optimal.
 *
 * @module
 */
import { UsageError } from "../errors.ts";

/** One option of an item: its exact cost and modelled distortion. */
export interface RdOption {
  /** Bytes this option stores (integer). */
  bytes: number;
  /** Modelled distortion (loss units); smaller is better. */
  distortion: number;
}

/** One item of the knapsack: options ordered by increasing bytes. */
export interface RdItem {
  options: RdOption[];
}

/** Solver that produced a solution. */
export type RdSolverKind = "exact" | "greedy";

/** Options of {@linkcode solveRateDistortion}. */
export interface RdSolveOptions {
  /** "auto" (exact when the table fits, else greedy), "exact" or "greedy". Default "auto". */
  solver?: "auto" | RdSolverKind;
  /** Largest exact table (items * budget steps) before "auto" falls back to greedy. Default 4e7. */
  maxTableCells?: number;
}

/** The chosen option per item and what it costs. */
export interface RdSolution {
  /** Index into each item's `options`. */
  choice: number[];
  /** Total bytes of the chosen options. */
  bytes: number;
  /** Total modelled distortion of the chosen options. */
  distortion: number;
  /** Solver that produced the choice. */
  solver: RdSolverKind;
}

const DEFAULT_MAX_TABLE_CELLS = 4e7;

/**
 * Picks one option per item minimizing total distortion with total bytes <= `budget`.
 *
 * @example Two items, room for one upgrade
 * ```ts
 * import { solveRateDistortion } from "./rate_distortion.ts";
 * const item = (s: number) => ({ options: [{ bytes: 4, distortion: s }, { bytes: 8, distortion: s / 4 }] });
 * const sol = solveRateDistortion([item(1), item(3)], 12);
 * if (sol.choice.join() !== "0,1" || sol.bytes !== 12) throw new Error();
 * ```
 * @param items Items with options ordered by increasing bytes.
 * @param budget Maximum total bytes.
 * @param options Solver choice and the exact solver's table limit.
 * @returns The choice, or throws when even the cheapest options exceed the budget.
 * @throws {UsageError} When the cheapest options already cost more than `budget`.
 */
export function solveRateDistortion(
  items: RdItem[],
  budget: number,
  options: RdSolveOptions = {},
): RdSolution {
  const minBytes = items.reduce((sum, item) => sum + item.options[0].bytes, 0);
  if (minBytes > budget) {
    throw new UsageError(
      `Budget of ${budget} bytes is below the ${minBytes} bytes of the cheapest options`,
    );
  }
  const kind = options.solver ?? "auto";
  const step = costStep(items);
  const cells = items.length * (Math.floor((budget - minBytes) / step) + 1);
  const maxCells = options.maxTableCells ?? DEFAULT_MAX_TABLE_CELLS;
  const useExact = kind === "exact" || (kind === "auto" && cells <= maxCells);
  const choice = useExact ? solveExact(items, budget - minBytes, step) : solveGreedy(items, budget);
  return summarize(items, choice, useExact ? "exact" : "greedy");
}

function summarize(items: RdItem[], choice: number[], solver: RdSolverKind): RdSolution {
  let bytes = 0, distortion = 0;
  items.forEach((item, i) => {
    bytes += item.options[choice[i]].bytes;
    distortion += item.options[choice[i]].distortion;
  });
  return { choice, bytes, distortion, solver };
}

/** Greatest common divisor of every option's bytes above its item's cheapest option. */
function costStep(items: RdItem[]): number {
  let g = 0;
  for (const item of items) {
    for (const o of item.options) g = gcd(g, o.bytes - item.options[0].bytes);
  }
  return g || 1;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Exact dynamic program. best[c] is the minimum distortion of the items so far with extra
 * bytes (above the cheapest options) at most c * step. Ties keep the cheaper option, so
 * the result is deterministic.
 */
function solveExact(items: RdItem[], slack: number, step: number): number[] {
  const states = Math.floor(slack / step) + 1;
  let best = new Float64Array(states);
  let next = new Float64Array(states);
  // picks[i * states + c]: option of item i in the optimum for budget step c (<= 255 options).
  const picks = new Uint8Array(items.length * states);
  items.forEach((item, i) => {
    if (item.options.length > 255) {
      throw new UsageError(
        `Item ${i} has ${item.options.length} options: at most 255 are supported`,
      );
    }
    const base = item.options[0].bytes;
    const extra = item.options.map((o) => (o.bytes - base) / step);
    next.fill(Infinity);
    for (let o = 0; o < item.options.length; o++) {
      const shift = extra[o], d = item.options[o].distortion;
      for (let c = shift; c < states; c++) {
        const value = best[c - shift] + d;
        if (value < next[c]) {
          next[c] = value;
          picks[i * states + c] = o;
        }
      }
    }
    [best, next] = [next, best];
  });
  const choice = new Array<number>(items.length);
  let c = states - 1;
  for (let i = items.length - 1; i >= 0; i--) {
    const o = picks[i * states + c];
    choice[i] = o;
    c -= (items[i].options[o].bytes - items[i].options[0].bytes) / step;
  }
  return choice;
}

/** Lagrangian sweep to the smallest multiplier that fits, then greedy single-step upgrades. */
function solveGreedy(items: RdItem[], budget: number): number[] {
  const pickAt = (lambda: number) =>
    items.map((item) => {
      let bestIndex = 0, bestValue = Infinity;
      item.options.forEach((o, k) => {
        const value = o.distortion + lambda * o.bytes;
        if (value < bestValue) [bestIndex, bestValue] = [k, value];
      });
      return bestIndex;
    });
  const bytesOf = (choice: number[]) =>
    choice.reduce((sum, o, i) => sum + items[i].options[o].bytes, 0);

  // Bisect log(lambda) between a multiplier that overspends and one that fits. A large
  // enough lambda always picks the cheapest options, which fit.
  if (bytesOf(pickAt(0)) <= budget) return pickAt(0);
  let hi = 1;
  while (bytesOf(pickAt(hi)) > budget) hi *= 16;
  let lo = hi;
  while (lo > 1e-300 && bytesOf(pickAt(lo)) <= budget) lo /= 16;
  for (let iter = 0; iter < 200 && hi / lo > 1 + 1e-12; iter++) {
    const mid = Math.sqrt(lo * hi);
    if (bytesOf(pickAt(mid)) > budget) lo = mid;
    else hi = mid;
  }
  const choice = pickAt(hi);
  let left = budget - bytesOf(choice);

  // Spend what is left: repeatedly take the single-step upgrade saving most distortion per byte.
  for (;;) {
    let bestItem = -1, bestRatio = 0;
    items.forEach((item, i) => {
      const now = item.options[choice[i]], up = item.options[choice[i] + 1];
      if (!up || up.bytes - now.bytes > left) return;
      const ratio = (now.distortion - up.distortion) / Math.max(up.bytes - now.bytes, 1e-300);
      if (ratio > bestRatio) [bestItem, bestRatio] = [i, ratio];
    });
    if (bestItem < 0) break;
    const item = items[bestItem];
    left -= item.options[choice[bestItem] + 1].bytes - item.options[choice[bestItem]].bytes;
    choice[bestItem]++;
  }
  return choice;
}
