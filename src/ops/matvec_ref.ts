/**
 * Plain TypeScript reference of {@linkcode matvec} (f64 accumulation).
 *
 * @module
 */

/**
 * y[yOffset + r] (+)= sum_c W[wOffset + r * ldw + c] * x[xOffset + c] for r < n, c < k.
 *
 * @example
 * ```ts
 * import { matvecRef } from "./matvec_ref.ts";
 * const y = new Float32Array(2);
 * matvecRef({ w: new Float32Array([1, 2, 3, 4]), x: new Float32Array([1, 1]), y, n: 2, k: 2 });
 * if (y[1] !== 7) throw new Error("wrong product");
 * ```
 * @param args Operands and layout, as for the GPU op.
 */
export function matvecRef(args: {
  w: Float32Array;
  x: Float32Array;
  y: Float32Array;
  n: number;
  k: number;
  ldw?: number;
  wOffset?: number;
  xOffset?: number;
  yOffset?: number;
  accumulate?: boolean;
}): void {
  const { w, x, y, n, k } = args;
  const ldw = args.ldw ?? k,
    wOff = args.wOffset ?? 0,
    xOff = args.xOffset ?? 0,
    yOff = args.yOffset ?? 0;
  for (let r = 0; r < n; r++) {
    let sum = 0;
    for (let c = 0; c < k; c++) sum += w[wOff + r * ldw + c] * x[xOff + c];
    y[yOff + r] = args.accumulate ? y[yOff + r] + sum : sum;
  }
}
