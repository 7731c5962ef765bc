/**
 * SwiGLU activation on the GPU, in place on the gate projection. Reference:
 * {@linkcode swigluRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { ShapeError } from "../errors.ts";
import { bindRange, checkSize, FLAT_WORKGROUP, flatGrid, paramWords } from "./_common.ts";
export { swigluRef } from "./swiglu_ref.ts";

/** Operands of {@linkcode swiglu}. Offsets count f32 elements. */
export interface SwigluArgs {
  /** Gate projection [n]; overwritten with silu(gate) * up. */
  gate: GPUBuffer;
  /** Up projection [n]. */
  up: GPUBuffer;
  /** Number of elements (rows * hidden). */
  n: number;
  /** Element offset in gate. Default 0. */
  gateOffset?: number;
  /** Element offset in up. Default 0. */
  upOffset?: number;
}

/**
 * Records gate = silu(gate) * up, with silu(g) = g / (1 + exp(-g)).
 *
 * @example
 * ```ts ignore
 * await swiglu(gpu, batch, { gate: h1, up: h3, n: T * hiddenDim });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and size.
 */
export async function swiglu(gpu: GpuContext, batch: GpuBatch, args: SwigluArgs): Promise<void> {
  checkSize("swiglu n", args.n);
  if (args.gate === args.up) throw new ShapeError("swiglu gate and up must be different buffers");
  const up = bindRange(gpu, args.up, args.upOffset ?? 0, args.n, "swiglu up");
  const gate = bindRange(gpu, args.gate, args.gateOffset ?? 0, args.n, "swiglu gate");
  const pipeline = await gpu.pipeline("swiglu", { WG: FLAT_WORKGROUP });
  const params = batch.uniform(paramWords([args.n, up.offset, gate.offset]));
  batch.dispatch(pipeline, [up.binding, gate.binding, params], flatGrid(gpu, args.n));
}
