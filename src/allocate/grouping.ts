/**
 * Sorting output channels by sensitivity and splitting them into groups that each get
 * their own codebook.
 *
 * @module
 */

/** Channel order and group boundaries of one layer. */
export interface ChannelGrouping {
  /** Channels by decreasing sensitivity (ties by increasing index), [m]. */
  order: number[];
  /** Exclusive end of each group in `order`; the last is m. */
  ends: number[];
}

/**
 * Sorts channels by decreasing sensitivity and splits them into at most `groups` groups
 * of equal size (sizes differ by at most one). Equal sizes give every codebook the same
 * number of training vectors. A boundary that would separate channels of exactly equal
 * sensitivity moves to the end of their run: such channels are interchangeable, so they
 * share one codebook, and a layer whose channels all tie becomes one group. With
 * `mergeTies` false the boundaries stay where equal sizes put them, so a layer always gets
 * min(groups, m) groups (layers sharing codebooks by group rank need equal counts).
 *
 * @example
 * ```ts
 * import { groupChannels } from "./grouping.ts";
 * const g = groupChannels(new Float64Array([1, 4, 3, 2]), 2);
 * if (g.order.join() !== "1,2,3,0" || g.ends.join() !== "2,4") throw new Error();
 * ```
 * @param sensitivity I_c per channel, [m].
 * @param groups Requested number of groups (at least 1).
 * @param mergeTies Move boundaries past runs of equal sensitivity. Default true.
 */
export function groupChannels(
  sensitivity: ArrayLike<number>,
  groups: number,
  mergeTies = true,
): ChannelGrouping {
  const m = sensitivity.length;
  const order = Array.from({ length: m }, (_, i) => i);
  order.sort((a, b) => sensitivity[b] - sensitivity[a] || a - b);
  const count = Math.max(1, Math.min(groups, m));
  const ends: number[] = [];
  for (let g = 1; g <= count; g++) {
    let end = Math.round((m * g) / count);
    while (mergeTies && end < m && sensitivity[order[end - 1]] === sensitivity[order[end]]) end++;
    if (end > (ends.at(-1) ?? 0)) ends.push(end);
  }
  return { order, ends };
}
