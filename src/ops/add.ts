/**
 * In-place addition with broadcasting on the GPU (residuals, biases). Reference:
 * {@linkcode addRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { ShapeError } from "../errors.ts";
import { bindRange, checkSize, FLAT_WORKGROUP, flatGrid, paramWords } from "./_common.ts";
export { addRef } from "./add_ref.ts";

/** Operands of {@linkcode add}. Offsets count f32 elements. */
export interface AddArgs {
  /** Tensor updated in place, n elements. */
  x: GPUBuffer;
  /** Tensor added, `period` elements repeated along x. */
  y: GPUBuffer;
  /** Elements of x to update; a multiple of period. */
  n: number;
  /** Elements of y; default n. A row length adds a bias to every row. */
  period?: number;
  /** Element offset in x. Default 0. */
  xOffset?: number;
  /** Element offset in y. Default 0. */
  yOffset?: number;
}

/**
 * Records x[i] += y[i % period] for i < n.
 *
 * @example Add a bias [kvDim] to T rows
 * ```ts ignore
 * await add(gpu, batch, { x: k, y: kBias, n: T * kvDim, period: kvDim });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function add(gpu: GpuContext, batch: GpuBatch, args: AddArgs): Promise<void> {
  const period = args.period ?? args.n;
  checkSize("add n", args.n);
  checkSize("add period", period);
  if (args.n % period !== 0) {
    throw new ShapeError(`add: n ${args.n} is not a multiple of the period ${period}`);
  }
  if (args.x === args.y) throw new ShapeError("add: x and y must be different buffers");
  const y = bindRange(gpu, args.y, args.yOffset ?? 0, period, "add y");
  const x = bindRange(gpu, args.x, args.xOffset ?? 0, args.n, "add x");
  const pipeline = await gpu.pipeline("add", { WG: FLAT_WORKGROUP });
  const params = batch.uniform(paramWords([args.n, period, y.offset, x.offset]));
  batch.dispatch(pipeline, [y.binding, x.binding, params], flatGrid(gpu, args.n));
}
