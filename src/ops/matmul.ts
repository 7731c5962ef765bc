/**
 * General f32 matrix product on the GPU, C = op(A) @ op(B) or C += op(A) @ op(B), for
 * forward linear layers and for gradient products. Reference: {@linkcode matmulRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { ShapeError } from "../errors.ts";
import { bindRange, checkSize, LOOP_BUDGET, paramWords, type RangeBinding } from "./_common.ts";
export { matmulRef } from "./matmul_ref.ts";

/** Invocations per workgroup along each of M and N; each invocation computes 4x4 of C. */
const WG = 8;
/** Inner dimension per dispatch: each invocation runs K / 4 (+3) iterations. */
export const MATMUL_MAX_K = 4 * (LOOP_BUDGET - 4);

/**
 * Operands of {@linkcode matmul}. Offsets and strides count f32 elements. Stored shapes:
 * A is [m, k] (row stride lda), or [k, m] when transA; B is [k, n] (row stride ldb), or
 * [n, k] when transB; C is [m, n] (row stride ldc).
 */
export interface MatmulArgs {
  /** Left operand A. */
  a: GPUBuffer;
  /** Right operand B. */
  b: GPUBuffer;
  /** Output C; must not be the same buffer as A or B. */
  c: GPUBuffer;
  /** Rows of C. */
  m: number;
  /** Columns of C. */
  n: number;
  /** Inner dimension. */
  k: number;
  /** A is stored [k, m] and read transposed. Default false. */
  transA?: boolean;
  /** B is stored [n, k] and read transposed (y = x @ W^T for W [out, in]). Default false. */
  transB?: boolean;
  /** Add the product to C instead of overwriting it. Default false. */
  accumulate?: boolean;
  /** Row stride of A as stored; default its stored row length (k, or m when transA). */
  lda?: number;
  /** Row stride of B as stored; default its stored row length (n, or k when transB). */
  ldb?: number;
  /** Row stride of C; default n. */
  ldc?: number;
  /** Element offset of A's first stored element. Default 0. */
  aOffset?: number;
  /** Element offset of B's first stored element. Default 0. */
  bOffset?: number;
  /** Element offset of C[0, 0]. Default 0. */
  cOffset?: number;
}

/**
 * Records C = op(A) @ op(B) (or C += with `accumulate`) into `batch`.
 *
 * K is split into slices of at most {@linkcode MATMUL_MAX_K} that accumulate, so no
 * invocation passes the loop cap. The vec4 kernel (kernels/matmul_vec4.wgsl) runs when
 * every stored row of A and B is read in whole aligned vec4s, the scalar one
 * (kernels/matmul.wgsl) otherwise. Each operand is bound over the range it uses, so a
 * buffer may exceed maxStorageBufferBindingSize when that range does not.
 *
 * @example Linear layer y[T, out] = x[T, in] @ W^T
 * ```ts ignore
 * await matmul(gpu, batch, { a: x, b: w, c: y, m: T, n: out, k: inDim, transB: true });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands, sizes and layout.
 * @throws {ShapeError} When a size is invalid or an operand runs past its buffer.
 */
export async function matmul(gpu: GpuContext, batch: GpuBatch, args: MatmulArgs): Promise<void> {
  const { m, n, k } = args;
  checkSize("matmul m", m, true);
  checkSize("matmul n", n, true);
  checkSize("matmul k", k, true);
  if (m === 0 || n === 0) return;
  const transA = args.transA ?? false, transB = args.transB ?? false;
  const lda = args.lda ?? (transA ? m : k);
  const ldb = args.ldb ?? (transB ? k : n);
  const ldc = args.ldc ?? n;
  const aOffset = args.aOffset ?? 0, bOffset = args.bOffset ?? 0, cOffset = args.cOffset ?? 0;
  if (lda < (transA ? m : k) || ldb < (transB ? k : n) || ldc < n) {
    throw new ShapeError(
      `matmul strides lda ${lda}, ldb ${ldb}, ldc ${ldc} are shorter than the rows of A, B or C (m ${m}, n ${n}, k ${k})`,
    );
  }
  if (args.c === args.a || args.c === args.b) {
    throw new ShapeError("matmul output C must not share a buffer with A or B");
  }

  const cRange = bindRange(gpu, args.c, cOffset, (m - 1) * ldc + n, "matmul C");
  if (k === 0) {
    // an empty product is zero: overwrite C unless accumulating
    if (!args.accumulate) await zeroFill(gpu, batch, args, cRange, ldc);
    return;
  }
  const vec4 = [lda, ldb, aOffset, bOffset].every((v) => v % 4 === 0) &&
    (transA ? m : k) % 4 === 0 && (transB ? k : n) % 4 === 0;

  for (let k0 = 0; k0 < k; k0 += MATMUL_MAX_K) {
    const kSlice = Math.min(MATMUL_MAX_K, k - k0);
    // where op(A)[0, k0] and op(B)[k0, 0] start, and the element extents each slice reads
    const aStart = aOffset + (transA ? k0 * lda : k0);
    const bStart = bOffset + (transB ? k0 : k0 * ldb);
    const aExtent = transA ? (kSlice - 1) * lda + m : (m - 1) * lda + kSlice;
    const bExtent = transB ? (n - 1) * ldb + kSlice : (kSlice - 1) * ldb + n;
    const aRange = bindRange(gpu, args.a, aStart, aExtent, "matmul A");
    const bRange = bindRange(gpu, args.b, bStart, bExtent, "matmul B");
    const pipeline = await gpu.pipeline(vec4 ? "matmul_vec4" : "matmul", {
      TRANS_A: transA ? 1 : 0,
      TRANS_B: transB ? 1 : 0,
      ACCUMULATE: args.accumulate || k0 > 0 ? 1 : 0,
      WG_X: WG,
      WG_Y: WG,
    });
    const params = batch.uniform(
      paramWords([m, n, kSlice, lda, ldb, ldc, aRange.offset, bRange.offset, cRange.offset]),
    );
    batch.dispatch(pipeline, [aRange.binding, bRange.binding, cRange.binding, params], [
      Math.ceil(n / (4 * WG)),
      Math.ceil(m / (4 * WG)),
    ]);
  }
}

// C = 0 for k = 0: the scalar kernel over a zero-length inner dimension stores its zero accumulators.
async function zeroFill(
  gpu: GpuContext,
  batch: GpuBatch,
  args: MatmulArgs,
  c: RangeBinding,
  ldc: number,
): Promise<void> {
  const { m, n } = args;
  const pipeline = await gpu.pipeline("matmul", {
    TRANS_A: 0,
    TRANS_B: 0,
    ACCUMULATE: 0,
    WG_X: WG,
    WG_Y: WG,
  });
  const a = bindRange(gpu, args.a, 0, 1, "matmul A");
  const b = bindRange(gpu, args.b, 0, 1, "matmul B");
  const params = batch.uniform(paramWords([m, n, 0, 1, n, ldc, 0, 0, c.offset]));
  batch.dispatch(pipeline, [a.binding, b.binding, c.binding, params], [
    Math.ceil(n / (4 * WG)),
    Math.ceil(m / (4 * WG)),
  ]);
}
