/**
 * Records the dispatches of a quantized linear layer: kernels/matvec_vq.wgsl and
 * kernels/matmul_vq.wgsl once per (channel group, stage, column slice), and
 * kernels/matvec_uniform.wgsl and kernels/matmul_uniform.wgsl once per column slice.
 * Slices keep every invocation under the loop cap; all dispatches after the first that
 * touches a row add to it.
 *
 * @module
 */
import type { Binding, GpuBatch, GpuContext } from "../gpu/device.ts";
import { flatGrid, LOOP_BUDGET, paramWords } from "./_common.ts";

/** Invocations per workgroup of the quantized kernels. */
export const QUANTIZED_WG = 64;
/** Output rows one invocation of every quantized kernel covers (fixed by the WGSL). */
const ROWS_PER_INVOCATION = 4;
/** Tokens one invocation of the matmul kernels covers (fixed by the WGSL). */
export const TOKENS_PER_INVOCATION = 8;
/** Iterations kept free for the kernels' fixed loops (the matmul kernels store 4 rows x 8 tokens). */
const FIXED_ITERATIONS = 64;

/** One stage of a channel group on the GPU. */
export interface VqStageBuffers {
  /** Packed indices [positions * vectorsPerRow], `bits` each. */
  indices: GPUBuffer;
  /** Codebook [size, vectorLength] f16, shared with other layers that name the same tensor. */
  codebook: GPUBuffer;
  /** Codebook entries K. */
  size: number;
  /** Index width, max(1, ceil(log2 K)). */
  bits: number;
  /** Whether the kernels copy the codebook into workgroup memory. */
  shared: boolean;
}

/** One channel group: stored positions [start, end) and their stages. */
export interface VqGroupBuffers {
  start: number;
  end: number;
  stages: VqStageBuffers[];
}

/** Geometry and buffers of a vector-quantized layer. */
export interface VqBuffers {
  rows: number;
  cols: number;
  vectorLength: number;
  /** Per-row scales [rows] f16, natural row order. */
  scales: GPUBuffer;
  /** Channel order [rows] u32 (stored position -> row), or null for natural order. */
  order: GPUBuffer | null;
  groups: VqGroupBuffers[];
}

/** Geometry and buffers of a uniformly quantized layer. */
export interface UniformBuffers {
  rows: number;
  cols: number;
  bits: number;
  groupSize: number;
  /** Codes [rows, ceil(cols * bits / 32)] u32. */
  qweight: GPUBuffer;
  /** Scales [rows, groups] f16. */
  scales: GPUBuffer;
  /** Zero points [rows, groups] f16. */
  zeros: GPUBuffer;
}

/** Activation operands, already bound: element offsets are relative to the bindings. */
export interface BoundActivations {
  /** x [tokens, cols] binding and its element offset. */
  x: Binding;
  xOffset: number;
  /** y [tokens, ldy] binding and its element offset. */
  y: Binding;
  yOffset: number;
  /** Row stride of y. */
  ldy: number;
  /** Tokens (rows of x and y). */
  tokens: number;
  /** Add to y instead of overwriting it. */
  accumulate: boolean;
}

/** u32 words of a [size, v] f16 codebook. */
export function codebookWords(size: number, v: number): number {
  return Math.ceil((size * v) / 2);
}

/**
 * Records y (+)= x @ W^T for a vector-quantized layer.
 *
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param w Layer buffers.
 * @param act Bound activations.
 */
export async function recordVq(
  gpu: GpuContext,
  batch: GpuBatch,
  w: VqBuffers,
  act: BoundActivations,
): Promise<void> {
  const v = w.vectorLength, perRow = Math.ceil(w.cols / v);
  const decode = act.tokens === 1;
  for (const group of w.groups) {
    const count = group.end - group.start;
    for (const [s, stage] of group.stages.entries()) {
      const cbWords = stage.shared ? codebookWords(stage.size, v) : 1;
      const copyIterations = stage.shared ? Math.ceil(cbWords / QUANTIZED_WG) : 0;
      const slice = LOOP_BUDGET - FIXED_ITERATIONS - copyIterations;
      for (let q0 = 0; q0 < perRow; q0 += slice) {
        const q1 = Math.min(perRow, q0 + slice);
        const pipeline = await gpu.pipeline(decode ? "matvec_vq" : "matmul_vq", {
          V: v,
          WG: QUANTIZED_WG,
          CB_SHARED: stage.shared ? 1 : 0,
          CB_WORDS: cbWords,
          HAS_ORDER: w.order ? 1 : 0,
          ACCUMULATE: act.accumulate || s > 0 || q0 > 0 ? 1 : 0,
        });
        const common = [count, group.start, perRow, q0, q1, w.cols, stage.bits];
        const params = batch.uniform(
          decode
            ? paramWords([...common, act.xOffset, act.yOffset])
            : paramWords([...common, act.tokens, act.ldy, act.xOffset, act.yOffset]),
        );
        // without a channel order the kernel never reads binding 4; any buffer fills it
        const bindings = [
          stage.indices,
          stage.codebook,
          act.x,
          w.scales,
          w.order ?? w.scales,
          act.y,
          params,
        ];
        const rowGroups = Math.ceil(count / (ROWS_PER_INVOCATION * QUANTIZED_WG));
        const grid: [number, number] = [
          rowGroups,
          decode ? 1 : Math.ceil(act.tokens / TOKENS_PER_INVOCATION),
        ];
        batch.dispatch(pipeline, bindings, grid);
      }
    }
  }
}

/**
 * Records y (+)= x @ W^T for a uniformly quantized layer.
 *
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param w Layer buffers.
 * @param act Bound activations.
 */
export async function recordUniform(
  gpu: GpuContext,
  batch: GpuBatch,
  w: UniformBuffers,
  act: BoundActivations,
): Promise<void> {
  const decode = act.tokens === 1;
  const groupSize = Math.min(w.groupSize, w.cols);
  const groups = Math.ceil(w.cols / groupSize), wordsPerRow = Math.ceil((w.cols * w.bits) / 32);
  // each column costs one inner iteration and at most one outer (group segment) iteration
  const slice = Math.floor((LOOP_BUDGET - FIXED_ITERATIONS) / 2);
  for (let c0 = 0; c0 < w.cols; c0 += slice) {
    const c1 = Math.min(w.cols, c0 + slice);
    const pipeline = await gpu.pipeline(decode ? "matvec_uniform" : "matmul_uniform", {
      WG: QUANTIZED_WG,
      ACCUMULATE: act.accumulate || c0 > 0 ? 1 : 0,
    });
    const common = [w.rows, w.cols, w.bits, groupSize, groups, wordsPerRow, c0, c1];
    const params = batch.uniform(
      decode
        ? paramWords([...common, act.xOffset, act.yOffset])
        : paramWords([...common, act.tokens, act.ldy, act.xOffset, act.yOffset]),
    );
    const bindings = [w.qweight, w.scales, w.zeros, act.x, act.y, params];
    const rowInvocations = Math.ceil(w.rows / ROWS_PER_INVOCATION);
    const grid: [number, number?] = decode
      ? flatGrid(gpu, rowInvocations, QUANTIZED_WG)
      : [Math.ceil(rowInvocations / QUANTIZED_WG), Math.ceil(act.tokens / TOKENS_PER_INVOCATION)];
    batch.dispatch(pipeline, bindings, grid);
  }
}
