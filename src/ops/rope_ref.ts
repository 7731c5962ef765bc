/**
 * Plain TypeScript reference of {@linkcode rope}: angles and products in double
 * precision, as run.c and Hugging Face define them.
 *
 * @module
 */

/**
 * Rotates in place every head of `rows` rows of `x`, row r at position pos0 + r.
 *
 * @example Position 0 leaves values unchanged
 * ```ts
 * import { ropeRef } from "./rope_ref.ts";
 * const x = new Float32Array([1, 2, 3, 4]);
 * ropeRef({ x, rows: 1, nHeads: 1, headDim: 4, pos0: 0, theta: 10000, style: "half" });
 * if (x[1] !== 2) throw new Error("rotated at position 0");
 * ```
 * @param args Data, sizes, base theta and pairing style, as for the GPU op.
 */
export function ropeRef(args: {
  x: Float32Array;
  rows: number;
  nHeads: number;
  headDim: number;
  pos0: number;
  theta: number;
  style: "adjacent" | "half";
  rowStride?: number;
  offset?: number;
}): void {
  const { x, rows, nHeads, headDim, pos0, theta, style } = args;
  const rowStride = args.rowStride ?? nHeads * headDim, offset = args.offset ?? 0;
  const half = headDim / 2;
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < nHeads; h++) {
      const base = offset + r * rowStride + h * headDim;
      for (let j = 0; j < half; j++) {
        const angle = (pos0 + r) * Math.pow(theta, -(2 * j) / headDim);
        const cos = Math.cos(angle), sin = Math.sin(angle);
        const a = style === "adjacent" ? base + 2 * j : base + j;
        const b = style === "adjacent" ? a + 1 : a + half;
        const x0 = x[a], x1 = x[b];
        x[a] = x0 * cos - x1 * sin;
        x[b] = x0 * sin + x1 * cos;
      }
    }
  }
}
