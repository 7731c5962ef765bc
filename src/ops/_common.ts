/**
 * Helpers shared by the op wrappers: the loop-iteration budget that keeps every
 * invocation under llvmpipe's 65535-iteration cap, uniform packing, grids for flat
 * dispatches, and storage bindings of a sub-range of a buffer.
 *
 * @module
 */
import type { Binding, GpuContext } from "../gpu/device.ts";
import { GpuError, ShapeError } from "../errors.ts";

/**
 * Maximum loop iterations one invocation may run, summed over all its loops. llvmpipe
 * silently stops every loop of an invocation after 65535 iterations in total. The
 * margin below that cap leaves room for each kernel's short fixed loops (stores,
 * remainders).
 */
export const LOOP_BUDGET = 60000;

/** Invocations per workgroup of the flat (1-D indexed) kernels. */
export const FLAT_WORKGROUP = 64;

/**
 * Packs a kernel's `Params` struct: u32 fields first, then f32 fields, in declaration order.
 *
 * @param u32 Unsigned fields.
 * @param f32 Float fields that follow them.
 * @returns The words of the uniform buffer.
 */
export function paramWords(u32: number[], f32: number[] = []): Uint32Array<ArrayBuffer> {
  const words = new Uint32Array(u32.length + f32.length);
  for (let i = 0; i < u32.length; i++) {
    const v = u32[i];
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new GpuError(`Kernel parameter ${i} is ${v}: expected an integer in [0, 2^32)`);
    }
    words[i] = v;
  }
  new Float32Array(words.buffer).set(f32, u32.length);
  return words;
}

/**
 * Workgroup grid [x, y] for `total` invocations of a flat kernel whose global index is
 * `gid.x + gid.y * num_workgroups.x * workgroupSize` (spills into y past the per-dimension
 * workgroup limit).
 *
 * @param gpu Context whose limits apply.
 * @param total Invocations needed.
 * @param workgroupSize Invocations per workgroup.
 */
export function flatGrid(
  gpu: GpuContext,
  total: number,
  workgroupSize = FLAT_WORKGROUP,
): [number, number] {
  const groups = Math.ceil(total / workgroupSize);
  const x = Math.min(groups, gpu.limits.maxComputeWorkgroupsPerDimension);
  return [x, x === 0 ? 0 : Math.ceil(groups / x)];
}

/** A storage binding over part of a buffer, and where element 0 of the range sits in it. */
export interface RangeBinding {
  /** Binding to pass to GpuBatch.dispatch. */
  binding: Binding;
  /** Element offset of the requested first element inside the binding. */
  offset: number;
}

/**
 * Binds f32 elements [first, first + count) of `buffer`. The binding starts at the
 * nearest allowed offset at or below `first`, so the kernel adds the returned `offset`.
 * Buffers larger than maxStorageBufferBindingSize can be used this way as long as the
 * range itself fits.
 *
 * @param gpu Context whose limits apply.
 * @param buffer Buffer to bind.
 * @param first First f32 element the kernel reads or writes.
 * @param count Number of f32 elements from `first` (at least 1).
 * @param operand Operand name for error messages.
 * @throws {ShapeError} When the range runs past the buffer.
 * @throws {GpuError} When the range is larger than one binding may be.
 */
export function bindRange(
  gpu: GpuContext,
  buffer: GPUBuffer,
  first: number,
  count: number,
  operand: string,
): RangeBinding {
  const begin = first * 4, end = (first + Math.max(count, 1)) * 4;
  if (end > buffer.size) {
    throw new ShapeError(
      `${operand}: elements [${first}, ${first + count}) run past its buffer of ${
        buffer.size / 4
      } f32`,
    );
  }
  const maxBinding = gpu.limits.maxStorageBufferBindingSize;
  if (begin === 0 && buffer.size <= maxBinding) return { binding: buffer, offset: 0 };
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const start = Math.floor(begin / align) * align;
  const size = Math.ceil((end - start) / 16) * 16;
  const clipped = Math.min(size, buffer.size - start);
  if (clipped > maxBinding) {
    throw new GpuError(
      `${operand}: ${clipped} bytes exceed the device's maxStorageBufferBindingSize ${maxBinding}: split the operand`,
    );
  }
  return { binding: { buffer, offset: start, size: clipped }, offset: (begin - start) / 4 };
}

/**
 * Throws a ShapeError unless `value` is a positive integer (or a non-negative one with
 * `allowZero`).
 *
 * @param name Argument name for the message.
 * @param value Value to check.
 * @param allowZero Accept 0.
 */
export function checkSize(name: string, value: number, allowZero = false): void {
  if (!Number.isSafeInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new ShapeError(
      `${name} must be a ${allowZero ? "non-negative" : "positive"} integer, got ${value}`,
    );
  }
}
