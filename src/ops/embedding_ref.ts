/**
 * Plain TypeScript reference of {@linkcode embedding}.
 *
 * @module
 */

/**
 * out[t, :] = table[ids[t], :] for t < ids.length; table is [vocab, dim] row-major.
 *
 * @example
 * ```ts
 * import { embeddingRef } from "./embedding_ref.ts";
 * const out = new Float32Array(2);
 * embeddingRef({ ids: [1], table: new Float32Array([0, 0, 5, 6]), dim: 2, out });
 * if (out[1] !== 6) throw new Error("wrong row");
 * ```
 * @param args Ids, table, width and output.
 */
export function embeddingRef(
  args: { ids: ArrayLike<number>; table: Float32Array; dim: number; out: Float32Array },
): void {
  const { ids, table, dim, out } = args;
  for (let t = 0; t < ids.length; t++) {
    out.set(table.subarray(ids[t] * dim, (ids[t] + 1) * dim), t * dim);
  }
}
