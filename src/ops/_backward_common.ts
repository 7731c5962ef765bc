/**
 * Helpers shared by the backward-pass op wrappers.
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";

/** Invocations per workgroup of the kernels that reduce one row per workgroup. */
export const ROW_WORKGROUP = 64;

/**
 * Workgroup grid with one workgroup per row, spilling into y past the per-dimension
 * limit (the kernels index the row as wid.x + wid.y * num_workgroups.x).
 *
 * @param gpu Context whose limits apply.
 * @param rows Rows to cover.
 */
export function rowGrid(gpu: GpuContext, rows: number): [number, number] {
  const maxX = gpu.limits.maxComputeWorkgroupsPerDimension;
  return [Math.min(rows, maxX), Math.ceil(rows / maxX)];
}
