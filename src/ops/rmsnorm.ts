/**
 * RMSNorm of each row on the GPU. Reference: {@linkcode rmsnormRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { ShapeError } from "../errors.ts";
import { bindRange, checkSize, paramWords } from "./_common.ts";
export { rmsnormRef } from "./rmsnorm_ref.ts";

const WG = 64;

/** Operands of {@linkcode rmsnorm}. Offsets count f32 elements. */
export interface RmsnormArgs {
  /** Input rows x [rows, dim]. */
  x: GPUBuffer;
  /** Per-element gain [dim]. */
  weight: GPUBuffer;
  /** Output [rows, dim]; must not be the buffer of x. */
  out: GPUBuffer;
  /** Number of rows. */
  rows: number;
  /** Row length. */
  dim: number;
  /** Epsilon added to the mean square. */
  eps: number;
  /** Element offset of x[0, 0]. Default 0. */
  xOffset?: number;
  /** Element offset of out[0, 0]. Default 0. */
  outOffset?: number;
}

/**
 * Records out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight for each row.
 *
 * @example Normalise the last of T rows only
 * ```ts ignore
 * await rmsnorm(gpu, batch, { x, weight, out, rows: 1, dim, eps: 1e-5, xOffset: (T - 1) * dim });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function rmsnorm(gpu: GpuContext, batch: GpuBatch, args: RmsnormArgs): Promise<void> {
  const { rows, dim } = args;
  checkSize("rmsnorm rows", rows);
  checkSize("rmsnorm dim", dim);
  if (args.x === args.out) {
    throw new ShapeError("rmsnorm output must not share a buffer with its input");
  }
  const x = bindRange(gpu, args.x, args.xOffset ?? 0, rows * dim, "rmsnorm x");
  const w = bindRange(gpu, args.weight, 0, dim, "rmsnorm weight");
  const out = bindRange(gpu, args.out, args.outOffset ?? 0, rows * dim, "rmsnorm out");
  const pipeline = await gpu.pipeline("rmsnorm", { WG });
  const params = batch.uniform(paramWords([rows, dim, x.offset, out.offset], [args.eps]));
  // one workgroup per row, spilling into y past the per-dimension limit
  const maxX = gpu.limits.maxComputeWorkgroupsPerDimension;
  batch.dispatch(pipeline, [x.binding, w.binding, out.binding, params], [
    Math.min(rows, maxX),
    Math.ceil(rows / maxX),
  ]);
}
