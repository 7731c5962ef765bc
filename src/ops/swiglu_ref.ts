/**
 * Plain TypeScript reference of {@linkcode swiglu}.
 *
 * @module
 */

/**
 * gate[i] = silu(gate[i]) * up[i] for i < n, with silu(g) = g / (1 + exp(-g)).
 *
 * @example
 * ```ts
 * import { swigluRef } from "./swiglu_ref.ts";
 * const gate = new Float32Array([0, 2]);
 * swigluRef({ gate, up: new Float32Array([5, 1]), n: 2 });
 * if (gate[0] !== 0) throw new Error("silu(0) is 0");
 * ```
 * @param args Operands and size, as for the GPU op.
 */
export function swigluRef(
  args: { gate: Float32Array; up: Float32Array; n: number; gateOffset?: number; upOffset?: number },
): void {
  const g0 = args.gateOffset ?? 0, u0 = args.upOffset ?? 0;
  for (let i = 0; i < args.n; i++) {
    const g = args.gate[g0 + i];
    args.gate[g0 + i] = (g / (1 + Math.exp(-g))) * args.up[u0 + i];
  }
}
