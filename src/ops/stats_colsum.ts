/**
 * Column sums (or sums of squares) over rows, accumulated on the GPU: the diagonal of
 * G = sum_t delta_t delta_t^T, and bias gradients. Reference: {@linkcode statsColsumRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import {
  bindRange,
  checkSize,
  FLAT_WORKGROUP,
  flatGrid,
  LOOP_BUDGET,
  paramWords,
} from "./_common.ts";

/**
 * Adds sum_t f(x[t, c]) to out[c], with f(v) = v^2 when `square`, else f(v) = v.
 *
 * @example
 * ```ts
 * import { statsColsumRef } from "./stats_colsum.ts";
 * const out = new Float64Array(2);
 * statsColsumRef(out, new Float64Array([1, 2, 3, 4]), 2, 2, true);
 * if (out[0] !== 10 || out[1] !== 20) throw new Error("1 + 9 and 4 + 16");
 * ```
 * @param out Sums [cols], accumulated.
 * @param x Rows [rows, cols].
 * @param rows Rows.
 * @param cols Columns.
 * @param square Sum squares.
 */
export function statsColsumRef(
  out: Float64Array,
  x: ArrayLike<number>,
  rows: number,
  cols: number,
  square: boolean,
): void {
  for (let t = 0; t < rows; t++) {
    for (let c = 0; c < cols; c++) {
      const v = x[t * cols + c];
      out[c] += square ? v * v : v;
    }
  }
}

/** Operands of {@linkcode statsColsum}. Offsets and stride count f32 elements. */
export interface StatsColsumArgs {
  /** Rows [rows, stride]. */
  x: GPUBuffer;
  /** Sums [cols], accumulated. */
  out: GPUBuffer;
  /** Rows. */
  rows: number;
  /** Columns summed (the first `cols` of each row). */
  cols: number;
  /** Sum squares (G diagonal) rather than values (bias gradient). */
  square: boolean;
  /** Elements between rows; default cols. */
  stride?: number;
  /** Element offset of x[0, 0]. Default 0. */
  xOffset?: number;
  /** Element offset of out[0]. Default 0. */
  outOffset?: number;
}

/**
 * Records out[c] += sum_t f(x[t, c]) in dispatches of at most LOOP_BUDGET rows, so no
 * invocation passes the loop cap.
 *
 * @example
 * ```ts ignore
 * await statsColsum(gpu, batch, { x: dy, out: gDiag, rows: T, cols: out, square: true });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function statsColsum(
  gpu: GpuContext,
  batch: GpuBatch,
  args: StatsColsumArgs,
): Promise<void> {
  const { rows, cols } = args;
  checkSize("statsColsum rows", rows);
  checkSize("statsColsum cols", cols);
  const stride = args.stride ?? cols;
  const x = bindRange(gpu, args.x, args.xOffset ?? 0, (rows - 1) * stride + cols, "statsColsum x");
  const out = bindRange(gpu, args.out, args.outOffset ?? 0, cols, "statsColsum out");
  const pipeline = await gpu.pipeline("stats_colsum", {
    WG: FLAT_WORKGROUP,
    SQUARE: args.square ? 1 : 0,
  });
  for (let row0 = 0; row0 < rows; row0 += LOOP_BUDGET) {
    const params = batch.uniform(
      paramWords([Math.min(LOOP_BUDGET, rows - row0), cols, row0, stride, x.offset, out.offset]),
    );
    batch.dispatch(pipeline, [x.binding, out.binding, params], flatGrid(gpu, cols));
  }
}
