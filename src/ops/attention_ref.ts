/**
 * Plain TypeScript reference of {@linkcode attention}: run.c's causal grouped-query
 * attention (f64 dot products and softmax).
 *
 * @module
 */

/**
 * out[r, h] = softmax_t(q[r, h] . k[t, h / group] * scale) @ v[:, h / group] over
 * t <= pos0 + r, for `rows` query rows; caches are [positions, nKvHeads * headDim].
 *
 * @example One row, one head, one key: the output is that key's value
 * ```ts
 * import { attentionRef } from "./attention_ref.ts";
 * const out = new Float32Array(2);
 * attentionRef({ q: new Float32Array([1, 0]), kCache: new Float32Array([1, 1]), vCache: new Float32Array([3, 4]),
 *   out, rows: 1, pos0: 0, nHeads: 1, nKvHeads: 1, headDim: 2 });
 * if (out[1] !== 4) throw new Error("wrong value");
 * ```
 * @param args Queries, caches, output and sizes, as for the GPU op.
 */
export function attentionRef(args: {
  q: Float32Array;
  kCache: Float32Array;
  vCache: Float32Array;
  out: Float32Array;
  rows: number;
  pos0: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}): void {
  const { q, kCache, vCache, out, rows, pos0, nHeads, nKvHeads, headDim } = args;
  const group = nHeads / nKvHeads, kvDim = nKvHeads * headDim, qDim = nHeads * headDim;
  const scale = 1 / Math.sqrt(headDim);
  const scores = new Float64Array(pos0 + rows);
  for (let r = 0; r < rows; r++) {
    const last = pos0 + r;
    for (let h = 0; h < nHeads; h++) {
      const qOff = r * qDim + h * headDim, kvOff = Math.floor(h / group) * headDim;
      let max = -Infinity;
      for (let t = 0; t <= last; t++) {
        let dot = 0;
        for (let i = 0; i < headDim; i++) dot += q[qOff + i] * kCache[t * kvDim + kvOff + i];
        scores[t] = dot * scale;
        max = Math.max(max, scores[t]);
      }
      let sum = 0;
      for (let t = 0; t <= last; t++) {
        scores[t] = Math.exp(scores[t] - max);
        sum += scores[t];
      }
      for (let i = 0; i < headDim; i++) {
        let acc = 0;
        for (let t = 0; t <= last; t++) acc += scores[t] * vCache[t * kvDim + kvOff + i];
        out[qOff + i] = acc / sum;
      }
    }
  }
}
