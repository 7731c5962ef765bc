/**
 * Internal state of an allocation: layers with their sensitivities and candidate channel
 * groupings, each group's codebook options with exact byte costs, and the knapsack items
 * built from them. Shared by allocate_bits.ts and group_count.ts.
 *
 * @module
 */
import { codebookBytes, storesChannelOrder, vqLayerBytes } from "../quantize/bpw.ts";
import { groupChannels } from "./grouping.ts";
import { type RdItem, type RdSolverKind, solveRateDistortion } from "./rate_distortion.ts";
import type { SensitivityKind } from "./sensitivity.ts";

/** Settings the solvers read. */
export interface SolveSettings {
  /** Budget in bits per weight. */
  bits: number;
  /** Vector length v. */
  vectorLength: number;
  /** Smallest codebook size (a power of two). */
  minCodebookSize: number;
  /** Largest codebook size (a power of two). */
  maxCodebookSize: number;
  /** Solver for the discrete problem. */
  solver: "auto" | RdSolverKind;
}

/** One channel group with its codebook options. */
export interface GroupInfo {
  /** First position in the layer's channel order (inclusive). */
  start: number;
  /** Last position in the layer's channel order (exclusive). */
  end: number;
  /** Sum of I_c over the group's channels. */
  sensitivity: number;
  /**
   * Codebook exponents k (K = 2^k) by increasing size, with the group's exact bytes for
   * each and, once measured by a trial quantization, the error a codebook of that size leaves.
   */
  options: GroupOption[];
}

/** One codebook size a group may take. */
export interface GroupOption {
  /** Codebook exponent: K = 2^k. */
  k: number;
  /** Exact bytes of the group's indices and codebook at this size. */
  bytes: number;
  /** Measured or extrapolated error in loss units; absent where the high-rate model applies. */
  distortion?: number;
  /** The error a trial quantization with this size left, when one ran. */
  measured?: number;
}

/** Channel order of a layer and its split into groups. */
export interface LayerGrouping {
  /** Channels by decreasing sensitivity, [m]. */
  order: number[];
  /** Groups partitioning `order`. */
  groups: GroupInfo[];
  /**
   * Bytes that do not depend on the codebook sizes: the f16 scales, and the packed
   * permutation when this grouping makes the quantizer store one (several groups, an order
   * that is not the identity).
   */
  fixedBytes: number;
}

/** A layer with its sensitivities and groupings, before codebook sizes are chosen. */
export interface LayerWork {
  name: string;
  rows: number;
  cols: number;
  /** I_c per channel, original order, [m]. */
  sensitivity: Float64Array;
  kind: SensitivityKind;
  /** Groupings to choose from (one unless the group count is searched), fewest groups first. */
  candidates: LayerGrouping[];
  /** The grouping in use. */
  grouping: LayerGrouping;
}

/**
 * Groups a layer's channels into at most `count` groups and lists each group's options.
 *
 * @param sensitivity I_c per channel, [m].
 * @param cols Input columns n.
 * @param count Requested number of groups.
 * @param s Codebook size range and vector length.
 * @param mergeTies Let ties of sensitivity merge groups (see grouping.ts). Default true.
 */
export function buildGrouping(
  sensitivity: Float64Array,
  cols: number,
  count: number,
  s: SolveSettings,
  mergeTies = true,
): LayerGrouping {
  const { order, ends } = groupChannels(sensitivity, count, mergeTies);
  const groups: GroupInfo[] = [];
  let start = 0;
  for (const end of ends) {
    let sum = 0;
    for (let i = start; i < end; i++) sum += sensitivity[order[i]];
    groups.push({ start, end, sensitivity: sum, options: groupOptions(end - start, cols, s) });
    start = end;
  }
  const permutation = storesChannelOrder(order, groups.length);
  const fixed = vqLayerBytes({
    rows: order.length,
    cols,
    vectorLength: s.vectorLength,
    groups: [],
    scales: true,
    permutation,
  });
  return { order, groups, fixedBytes: fixed.total };
}

/**
 * Lists the codebook exponents a group may use and the exact bytes of each. Codebooks
 * larger than the next power of two above the group's vector count cannot hold more
 * distinct vectors, so they are left out.
 */
function groupOptions(
  rows: number,
  cols: number,
  s: SolveSettings,
): GroupOption[] {
  const v = s.vectorLength;
  const vectors = rows * Math.ceil(cols / v);
  const kMin = Math.log2(s.minCodebookSize);
  const kMax = Math.max(
    kMin,
    Math.min(Math.log2(s.maxCodebookSize), Math.ceil(Math.log2(vectors))),
  );
  const options: GroupOption[] = [];
  for (let k = kMin; k <= kMax; k++) {
    const storage = {
      rows,
      cols,
      vectorLength: v,
      groups: [{ rows, codebookSize: 2 ** k }],
      scales: false,
      permutation: false,
    };
    options.push({ k, bytes: vqLayerBytes(storage).total });
  }
  return options;
}

/**
 * Returns the largest whole number of bytes whose bits per weight stay within `bits`
 * after floating-point rounding.
 *
 * @param bits Budget in bits per weight.
 * @param weights Weights the budget covers.
 */
export function budgetBytes(bits: number, weights: number): number {
  let bytes = Math.floor((bits * weights) / 8);
  while (bytes > 0 && (bytes * 8) / weights > bits) bytes--;
  return bytes;
}

/**
 * Returns the loss of a group coded with one of its options: the option's measured value
 * when it has one, else the high-rate model sum(I_c) * 2^(-2 k / v).
 *
 * @param group Group.
 * @param option One of `group.options`.
 * @param v Vector length.
 */
export function groupDistortion(group: GroupInfo, option: GroupOption, v: number): number {
  return option.distortion ?? group.sensitivity * 2 ** ((-2 * option.k) / v);
}

/**
 * Builds knapsack items from groups. Groups with identical option tables and sensitivity
 * become one item, so interchangeable channels always receive the same rate.
 *
 * Groups that share one codebook across layers arrive here already merged into one
 * GroupInfo by {@linkcode sharedGroup}, so their codebook bytes count once.
 */
function buildItems(groups: GroupInfo[], v: number): { items: RdItem[]; members: GroupInfo[][] } {
  const classes = new Map<string, GroupInfo[]>();
  for (const g of groups) {
    const key = `${g.options.map((o) => `${o.bytes}:${o.distortion}`).join(",")}|${
      g.options[0].k
    }|${g.sensitivity}`;
    const list = classes.get(key);
    if (list) list.push(g);
    else classes.set(key, [g]);
  }
  const members = [...classes.values()];
  const items = members.map((list) => ({
    options: list[0].options.map((o) => ({
      bytes: o.bytes * list.length,
      distortion: groupDistortion(list[0], o, v) * list.length,
    })),
  }));
  return { items, members };
}

/** Codebook exponents chosen for groups, their modelled loss and the solver used. */
export interface GroupSolution {
  k: Map<GroupInfo, number>;
  distortion: number;
  solver: RdSolverKind;
}

/**
 * Chooses every group's codebook exponent so that the groups' bytes stay within `budget`.
 *
 * @param groups Groups, possibly from several layers.
 * @param budget Bytes available to the groups (indices and codebooks).
 * @param s Vector length and solver.
 */
export function solveGroups(groups: GroupInfo[], budget: number, s: SolveSettings): GroupSolution {
  const { items, members } = buildItems(groups, s.vectorLength);
  const solution = solveRateDistortion(items, budget, { solver: s.solver });
  const k = new Map<GroupInfo, number>();
  members.forEach((list, i) => {
    for (const g of list) k.set(g, g.options[solution.choice[i]].k);
  });
  return { k, distortion: solution.distortion, solver: solution.solver };
}

/**
 * Returns a grouping's bytes with every group at its smallest codebook.
 *
 * @param layer Layer whose grouping in use is measured by default.
 * @param grouping One of the layer's groupings.
 */
export function minimumBytes(layer: LayerWork, grouping: LayerGrouping = layer.grouping): number {
  return grouping.fixedBytes + grouping.groups.reduce((sum, g) => sum + g.options[0].bytes, 0);
}

/**
 * Merges group rank g of every layer in a codebook scope into one group: its codebook
 * size is chosen once, its codebook bytes (f16 [K, v]) count once, and its index bytes
 * and sensitivity are the sums over the layers. Codebooks larger than the next power of
 * two above the scope's vector count for that rank are not offered.
 *
 * @param members The rank-g group of each layer in the scope, with the layer's input columns.
 * @param s Codebook size range and vector length.
 */
export function sharedGroup(
  members: { group: GroupInfo; cols: number }[],
  s: SolveSettings,
): GroupInfo {
  const v = s.vectorLength;
  const vectors = members.reduce(
    (n, m) => n + (m.group.end - m.group.start) * Math.ceil(m.cols / v),
    0,
  );
  const kMin = Math.log2(s.minCodebookSize);
  const kMax = Math.max(
    kMin,
    Math.min(Math.log2(s.maxCodebookSize), Math.ceil(Math.log2(vectors))),
  );
  const options: GroupOption[] = [];
  for (let k = kMin; k <= kMax; k++) {
    let bytes = codebookBytes(2 ** k, v);
    for (const { group, cols } of members) {
      const rows = group.end - group.start;
      const groups = [{ rows, codebookSize: 2 ** k, ownsCodebook: false }];
      bytes +=
        vqLayerBytes({ rows, cols, vectorLength: v, groups, scales: false, permutation: false })
          .total;
    }
    options.push({ k, bytes });
  }
  const sensitivity = members.reduce((n, m) => n + m.group.sensitivity, 0);
  return { start: members[0].group.start, end: members[0].group.end, sensitivity, options };
}
