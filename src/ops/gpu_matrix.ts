/**
 * Weight matrices on the GPU, split into row chunks. Each chunk is its own buffer of at
 * most maxStorageBufferBindingSize bytes, so a matrix larger than one storage binding
 * (a 128k x 4096 f32 embedding is 2 GiB) can still be bound.
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import { GpuError, ShapeError } from "../errors.ts";

/** Rows [row0, row0 + rows) of a matrix, stored row-major in `buffer`. */
export interface RowChunk {
  /** Buffer holding [rows, cols] f32. */
  buffer: GPUBuffer;
  /** Index of the chunk's first row in the whole matrix. */
  row0: number;
  /** Rows in this chunk. */
  rows: number;
}

/** A [rows, cols] f32 matrix held as row chunks. */
export interface GpuMatrix {
  /** Rows of the whole matrix. */
  rows: number;
  /** Columns. */
  cols: number;
  /** Chunks in row order, covering every row once. */
  chunks: RowChunk[];
}

/**
 * Rows per chunk: as many as fit in `maxBytes`, in one storage binding and in one buffer.
 *
 * @param gpu Context whose limits apply.
 * @param cols Columns of the matrix.
 * @param maxBytes Cap on one chunk's size; default the device's binding limit.
 * @throws {GpuError} When a single row is larger than the cap.
 */
export function rowsPerChunk(gpu: GpuContext, cols: number, maxBytes?: number): number {
  const limit = Math.min(
    maxBytes ?? Infinity,
    gpu.limits.maxStorageBufferBindingSize,
    gpu.limits.maxBufferSize,
  );
  const rows = Math.floor(limit / (4 * cols));
  if (rows < 1) {
    throw new GpuError(
      `A matrix row of ${cols} f32 is larger than the ${limit}-byte storage binding limit`,
    );
  }
  return rows;
}

/**
 * Uploads a row-major [rows, cols] matrix as row chunks.
 *
 * @example
 * ```ts ignore
 * const head = uploadMatrix(gpu, await weights.read("lm_head.weight"), vocab, dim, "lm_head");
 * ```
 * @param gpu Context that will own the buffers.
 * @param data Matrix values, rows * cols of them.
 * @param rows Rows.
 * @param cols Columns.
 * @param label Debug label (the tensor name).
 * @param maxChunkBytes Cap on one chunk's size; default the device's binding limit.
 */
export function uploadMatrix(
  gpu: GpuContext,
  data: Float32Array,
  rows: number,
  cols: number,
  label: string,
  maxChunkBytes?: number,
): GpuMatrix {
  if (data.length !== rows * cols) {
    throw new ShapeError(
      `${label}: expected ${rows} x ${cols} = ${rows * cols} values, got ${data.length}`,
    );
  }
  const step = rowsPerChunk(gpu, cols, maxChunkBytes);
  const chunks: RowChunk[] = [];
  for (let row0 = 0; row0 < rows; row0 += step) {
    const n = Math.min(step, rows - row0);
    const buffer = gpu.upload(
      data.subarray(row0 * cols, (row0 + n) * cols),
      `${label}[${row0}:${row0 + n}]`,
    );
    chunks.push({ buffer, row0, rows: n });
  }
  return { rows, cols, chunks };
}

/**
 * Frees the buffers of a matrix.
 *
 * @param gpu Context that owns them.
 * @param matrix Matrix to free.
 */
export function releaseMatrix(gpu: GpuContext, matrix: GpuMatrix): void {
  for (const chunk of matrix.chunks) gpu.release(chunk.buffer);
}
