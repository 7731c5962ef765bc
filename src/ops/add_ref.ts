/**
 * Plain TypeScript reference of {@linkcode add}.
 *
 * @module
 */

/**
 * x[xOffset + i] += y[yOffset + i % period] for i < n.
 *
 * @example Bias over two rows
 * ```ts
 * import { addRef } from "./add_ref.ts";
 * const x = new Float32Array(4);
 * addRef({ x, y: new Float32Array([1, 2]), n: 4, period: 2 });
 * if (x[3] !== 2) throw new Error("wrong broadcast");
 * ```
 * @param args Operands and sizes, as for the GPU op.
 */
export function addRef(
  args: {
    x: Float32Array;
    y: Float32Array;
    n: number;
    period?: number;
    xOffset?: number;
    yOffset?: number;
  },
): void {
  const period = args.period ?? args.n, x0 = args.xOffset ?? 0, y0 = args.yOffset ?? 0;
  for (let i = 0; i < args.n; i++) args.x[x0 + i] += args.y[y0 + (i % period)];
}
