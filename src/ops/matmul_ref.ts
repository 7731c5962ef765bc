/**
 * Plain TypeScript reference of {@linkcode matmul}: the same operands and layout, f64
 * accumulation.
 *
 * @module
 */

/** Operands of {@linkcode matmulRef}; the same layout rules as the GPU op. */
export interface MatmulRefArgs {
  /** Left operand A. */
  a: Float32Array;
  /** Right operand B. */
  b: Float32Array;
  /** Output C, updated in place. */
  c: Float32Array;
  /** Rows of C. */
  m: number;
  /** Columns of C. */
  n: number;
  /** Inner dimension. */
  k: number;
  /** A is stored [k, m]. */
  transA?: boolean;
  /** B is stored [n, k]. */
  transB?: boolean;
  /** Add to C instead of overwriting. */
  accumulate?: boolean;
  /** Row stride of A as stored. */
  lda?: number;
  /** Row stride of B as stored. */
  ldb?: number;
  /** Row stride of C. */
  ldc?: number;
  /** Element offset of A. */
  aOffset?: number;
  /** Element offset of B. */
  bOffset?: number;
  /** Element offset of C. */
  cOffset?: number;
}

/**
 * C = op(A) @ op(B), or C += op(A) @ op(B) with `accumulate`.
 *
 * @example 2x2 product
 * ```ts
 * import { matmulRef } from "./matmul_ref.ts";
 * const c = new Float32Array(4);
 * matmulRef({ a: new Float32Array([1, 2, 3, 4]), b: new Float32Array([1, 0, 0, 1]), c, m: 2, n: 2, k: 2 });
 * if (c[3] !== 4) throw new Error("wrong product");
 * ```
 * @param args Operands and layout, as for the GPU op.
 */
export function matmulRef(args: MatmulRefArgs): void {
  const { a, b, c, m, n, k } = args;
  const transA = args.transA ?? false, transB = args.transB ?? false;
  const lda = args.lda ?? (transA ? m : k), ldb = args.ldb ?? (transB ? k : n), ldc = args.ldc ?? n;
  const aOff = args.aOffset ?? 0, bOff = args.bOffset ?? 0, cOff = args.cOffset ?? 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) {
        const av = a[aOff + (transA ? p * lda + i : i * lda + p)];
        const bv = b[bOff + (transB ? j * ldb + p : p * ldb + j)];
        sum += av * bv;
      }
      const at = cOff + i * ldc + j;
      c[at] = args.accumulate ? c[at] + sum : sum;
    }
  }
}
