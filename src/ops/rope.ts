/**
 * Rotary position embedding on the GPU, in place, in both pairing conventions.
 * Reference: {@linkcode ropeRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { ShapeError } from "../errors.ts";
import { bindRange, checkSize, FLAT_WORKGROUP, flatGrid, paramWords } from "./_common.ts";
export { ropeRef } from "./rope_ref.ts";

/**
 * Builds the (cos, sin) table the kernel reads, [positions, headDim / 2, 2] f32, with
 * angle pos * theta^(-2j / headDim) for pair j, computed in double precision (f32 angles
 * lose about 1e-4 radians at position 2048).
 *
 * @example
 * ```ts
 * import { ropeTable } from "./rope.ts";
 * const table = ropeTable(4, 8, 10000);
 * if (table.length !== 4 * 4 * 2 || table[0] !== 1) throw new Error("position 0 has cos 1");
 * ```
 * @param positions Number of positions (the context length).
 * @param headDim Head width (even).
 * @param theta Rotary base.
 */
export function ropeTable(positions: number, headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const table = new Float32Array(positions * half * 2);
  for (let p = 0; p < positions; p++) {
    for (let j = 0; j < half; j++) {
      const angle = p * Math.pow(theta, -(2 * j) / headDim);
      table[2 * (p * half + j)] = Math.cos(angle);
      table[2 * (p * half + j) + 1] = Math.sin(angle);
    }
  }
  return table;
}

/** Operands of {@linkcode rope}. Offsets and strides count f32 elements. */
export interface RopeArgs {
  /** Rows of heads, rotated in place: row r, head h at offset + r * rowStride + h * headDim. */
  x: GPUBuffer;
  /** Table from {@linkcode ropeTable} covering positions up to pos0 + rows. */
  table: GPUBuffer;
  /** Rows (tokens). */
  rows: number;
  /** Heads per row. */
  nHeads: number;
  /** Head width (even). */
  headDim: number;
  /** Position of row 0. */
  pos0: number;
  /** "adjacent" rotates pairs (2j, 2j+1); "half" rotates (j, j + headDim/2). */
  style: "adjacent" | "half";
  /** Elements between rows; default nHeads * headDim. */
  rowStride?: number;
  /** Element offset of row 0. Default 0. */
  offset?: number;
}

/**
 * Records the rotation of every head of `rows` rows by their positions.
 *
 * @example Rotate the keys just written to the cache at positions pos..pos+T-1
 * ```ts ignore
 * await rope(gpu, batch, { x: kCache, table, rows: T, nHeads: nKv, headDim, pos0: pos, style, offset: pos * kvDim });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 * @throws {ShapeError} When the table does not cover the positions.
 */
export async function rope(gpu: GpuContext, batch: GpuBatch, args: RopeArgs): Promise<void> {
  const { rows, nHeads, headDim, pos0 } = args;
  checkSize("rope rows", rows);
  checkSize("rope nHeads", nHeads);
  checkSize("rope headDim", headDim);
  checkSize("rope pos0", pos0, true);
  if (headDim % 2 !== 0) throw new ShapeError(`rope: head width ${headDim} is odd`);
  const rowStride = args.rowStride ?? nHeads * headDim;
  const half = headDim / 2;
  const tablePositions = args.table.size / 4 / headDim;
  if (pos0 + rows > tablePositions) {
    throw new ShapeError(
      `rope: positions up to ${pos0 + rows} exceed the table's ${
        Math.floor(tablePositions)
      } positions`,
    );
  }
  // the table is bound from position 0 up to the last position needed
  const table = bindRange(gpu, args.table, 0, (pos0 + rows) * headDim, "rope table");
  const x = bindRange(
    gpu,
    args.x,
    args.offset ?? 0,
    (rows - 1) * rowStride + nHeads * headDim,
    "rope x",
  );
  const pipeline = await gpu.pipeline("rope", {
    HALF: args.style === "half" ? 1 : 0,
    WG: FLAT_WORKGROUP,
  });
  const params = batch.uniform(paramWords([rows, nHeads, headDim, rowStride, x.offset, pos0]));
  batch.dispatch(pipeline, [table.binding, x.binding, params], flatGrid(gpu, rows * nHeads * half));
}
