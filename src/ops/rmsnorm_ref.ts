/**
 * Plain TypeScript reference of {@linkcode rmsnorm} (f64 sums).
 *
 * @module
 */

/**
 * out[r, i] = x[r, i] / sqrt(mean_i(x[r, i]^2) + eps) * weight[i] for each of `rows` rows.
 *
 * @example
 * ```ts
 * import { rmsnormRef } from "./rmsnorm_ref.ts";
 * const out = new Float32Array(2);
 * rmsnormRef({ x: new Float32Array([3, 4]), weight: new Float32Array([1, 1]), out, rows: 1, dim: 2, eps: 0 });
 * if (Math.abs(out[1] - 4 / Math.sqrt(12.5)) > 1e-6) throw new Error("wrong norm");
 * ```
 * @param args Operands and sizes, as for the GPU op.
 */
export function rmsnormRef(args: {
  x: Float32Array;
  weight: Float32Array;
  out: Float32Array;
  rows: number;
  dim: number;
  eps: number;
  xOffset?: number;
  outOffset?: number;
}): void {
  const { x, weight, out, rows, dim, eps } = args;
  const xOff = args.xOffset ?? 0, outOff = args.outOffset ?? 0;
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[xOff + r * dim + i] ** 2;
    const scale = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) {
      out[outOff + r * dim + i] = x[xOff + r * dim + i] * scale * weight[i];
    }
  }
}
