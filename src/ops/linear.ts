/**
 * Linear layer over a row-chunked weight, y[rows, out] = x[rows, in] @ W^T with W stored
 * [out, in]: {@linkcode matvec} for one row (decoding), {@linkcode matmul} for several
 * (prefill), one dispatch per weight chunk. Reference: matmulRef with transB.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { checkSize } from "./_common.ts";
import type { GpuMatrix } from "./gpu_matrix.ts";
import { matmul } from "./matmul.ts";
import { matvec } from "./matvec.ts";

/** Operands of {@linkcode linear}. Offsets and strides count f32 elements. */
export interface LinearArgs {
  /** Input rows [rows, w.cols] (row stride w.cols). */
  x: GPUBuffer;
  /** Weight [out, in] as row chunks. */
  w: GpuMatrix;
  /** Output rows [rows, w.rows] with row stride ldy. */
  y: GPUBuffer;
  /** Number of rows (tokens). */
  rows: number;
  /** Element offset of x[0, 0]. Default 0. */
  xOffset?: number;
  /** Element offset of y[0, 0]. Default 0. */
  yOffset?: number;
  /** Row stride of y; default w.rows. */
  ldy?: number;
  /** Add to y instead of overwriting it (residual connections). Default false. */
  accumulate?: boolean;
}

/**
 * Records y = x @ W^T (or y += x @ W^T).
 *
 * @example Project T normalised rows to queries
 * ```ts ignore
 * await linear(gpu, batch, { x: xb, w: wq, y: q, rows: T });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function linear(gpu: GpuContext, batch: GpuBatch, args: LinearArgs): Promise<void> {
  const { x, w, y, rows } = args;
  checkSize("linear rows", rows);
  const xOffset = args.xOffset ?? 0, yOffset = args.yOffset ?? 0, ldy = args.ldy ?? w.rows;
  for (const chunk of w.chunks) {
    if (rows === 1) {
      await matvec(gpu, batch, {
        w: chunk.buffer,
        x,
        y,
        n: chunk.rows,
        k: w.cols,
        xOffset,
        yOffset: yOffset + chunk.row0,
        accumulate: args.accumulate,
      });
    } else {
      await matmul(gpu, batch, {
        a: x,
        b: chunk.buffer,
        c: y,
        m: rows,
        n: chunk.rows,
        k: w.cols,
        transB: true,
        ldc: ldy,
        aOffset: xOffset,
        cOffset: yOffset + chunk.row0,
        accumulate: args.accumulate,
      });
    }
  }
}
