/**
 * Causal grouped-query attention over a KV cache on the GPU, for prefill (many query
 * rows) and decoding (one row). Reference: {@linkcode attentionRef}.
 *
 * Two kernels run per pass: kernels/attention.wgsl attends each (row, head) to blocks
 * of keys and writes partial softmax states to a scratch buffer, and
 * kernels/attention_merge.wgsl combines them. Block lengths keep every invocation below
 * the 65535-iteration loop cap, so context length only adds blocks.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { GpuError, ShapeError } from "../errors.ts";
import {
  bindRange,
  checkSize,
  FLAT_WORKGROUP,
  flatGrid,
  LOOP_BUDGET,
  paramWords,
} from "./_common.ts";
export { attentionRef } from "./attention_ref.ts";

/** Maximum keys per block, equal to MAX_BLOCK in kernels/attention.wgsl (the size of its private score array). */
export const ATTENTION_MAX_BLOCK = 128;
/** Shortest key block worth an invocation when blocks are added for parallelism. */
const MIN_BLOCK = 16;
/**
 * Invocations to aim for in the first pass: decoding has one query row, so its keys
 * are split into more blocks to occupy the device. A heuristic, not a device limit.
 */
const TARGET_INVOCATIONS = 2048;

/** Split of the keys of one pass into blocks. */
export interface AttentionPlan {
  /** Keys per block. */
  blockLen: number;
  /** Blocks covering positions [0, contextEnd). */
  nBlocks: number;
}

/**
 * Chooses the key blocks for `rows` query rows that see up to `contextEnd` keys.
 *
 * @param rows Query rows.
 * @param contextEnd One past the last key position (pos0 + rows).
 * @param nHeads Query heads.
 * @param headDim Head width.
 * @throws {GpuError} When the head is too wide or the context too long for the loop cap.
 */
export function attentionPlan(
  rows: number,
  contextEnd: number,
  nHeads: number,
  headDim: number,
): AttentionPlan {
  // one invocation runs about blockLen * (2 * headDim + 2) + headDim iterations (attention.wgsl)
  const maxLen = Math.min(
    ATTENTION_MAX_BLOCK,
    Math.floor((LOOP_BUDGET - headDim - 8) / (2 * headDim + 2)),
  );
  if (maxLen < 1) {
    throw new GpuError(`Attention head width ${headDim} is too wide for the loop-iteration cap`);
  }
  const minBlocks = Math.ceil(contextEnd / maxLen);
  const forParallelism = Math.ceil(TARGET_INVOCATIONS / (rows * nHeads));
  let nBlocks = Math.max(minBlocks, Math.min(forParallelism, Math.ceil(contextEnd / MIN_BLOCK)));
  const blockLen = Math.ceil(contextEnd / nBlocks);
  nBlocks = Math.ceil(contextEnd / blockLen);
  // the merge runs 2 * nBlocks iterations per invocation
  if (2 * nBlocks > LOOP_BUDGET) {
    throw new GpuError(
      `Attention over ${contextEnd} positions needs ${nBlocks} key blocks, more than the loop-iteration cap allows`,
    );
  }
  return { blockLen, nBlocks };
}

/**
 * Scratch bytes that let {@linkcode attention} process `rows` query rows per pass at any
 * context up to `contextLength` (fewer bytes still work: the rows are then split into
 * more passes, down to one row per pass).
 *
 * @param rows Query rows per call.
 * @param contextLength Longest context.
 * @param nHeads Query heads.
 * @param headDim Head width.
 */
export function attentionScratchBytes(
  rows: number,
  contextLength: number,
  nHeads: number,
  headDim: number,
): number {
  const perRow = (r: number) =>
    nHeads * attentionPlan(r, contextLength, nHeads, headDim).nBlocks * (headDim + 2) * 4;
  return Math.max(perRow(1), rows * perRow(rows));
}

/** Operands of {@linkcode attention}. Offsets and strides count f32 elements. */
export interface AttentionArgs {
  /** Queries, already rotated: row r, head h at qOffset + r * qStride + h * headDim. */
  q: GPUBuffer;
  /** Key cache [positions, nKvHeads * headDim] holding rotated keys 0 .. pos0 + rows - 1. */
  kCache: GPUBuffer;
  /** Value cache, same layout as the key cache. */
  vCache: GPUBuffer;
  /** Output, same layout as q (with outStride and outOffset). */
  out: GPUBuffer;
  /** Scratch for partial states; see {@linkcode attentionScratchBytes}. */
  scratch: GPUBuffer;
  /** Query rows. */
  rows: number;
  /** Position of query row 0; row r attends to keys 0 ..= pos0 + r. */
  pos0: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads; divides nHeads. */
  nKvHeads: number;
  /** Head width. */
  headDim: number;
  /** Elements between query rows; default nHeads * headDim. */
  qStride?: number;
  /** Element offset of query row 0. Default 0. */
  qOffset?: number;
  /** Elements between output rows; default nHeads * headDim. */
  outStride?: number;
  /** Element offset of output row 0. Default 0. */
  outOffset?: number;
  /** Score scale; default 1 / sqrt(headDim). */
  scale?: number;
}

/**
 * Records causal attention of `rows` query rows over the cached keys and values.
 *
 * @example One decoding step at position pos
 * ```ts ignore
 * await attention(gpu, batch, { q, kCache, vCache, out: att, scratch, rows: 1, pos0: pos, nHeads, nKvHeads, headDim });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 * @throws {ShapeError} When the heads do not divide or the scratch cannot hold one row.
 */
export async function attention(
  gpu: GpuContext,
  batch: GpuBatch,
  args: AttentionArgs,
): Promise<void> {
  const { rows, pos0, nHeads, nKvHeads, headDim } = args;
  checkSize("attention rows", rows);
  checkSize("attention pos0", pos0, true);
  checkSize("attention nHeads", nHeads);
  checkSize("attention nKvHeads", nKvHeads);
  checkSize("attention headDim", headDim);
  if (nHeads % nKvHeads !== 0) {
    throw new ShapeError(
      `attention: ${nKvHeads} key/value heads do not divide ${nHeads} query heads`,
    );
  }
  const qStride = args.qStride ?? nHeads * headDim, outStride = args.outStride ?? nHeads * headDim;
  const kvStride = nKvHeads * headDim;
  const contextEnd = pos0 + rows;
  const plan = attentionPlan(rows, contextEnd, nHeads, headDim);
  const rowFloats = nHeads * plan.nBlocks * (headDim + 2);
  const scratchBytes = Math.min(args.scratch.size, gpu.limits.maxStorageBufferBindingSize);
  const rowsPerPass = Math.min(rows, Math.floor(scratchBytes / 4 / rowFloats));
  if (rowsPerPass < 1) {
    throw new ShapeError(
      `attention: scratch of ${args.scratch.size} bytes cannot hold one row (${
        rowFloats * 4
      } bytes); size it with attentionScratchBytes`,
    );
  }

  const keys = bindRange(gpu, args.kCache, 0, contextEnd * kvStride, "attention key cache");
  const values = bindRange(gpu, args.vCache, 0, contextEnd * kvStride, "attention value cache");
  const first = await gpu.pipeline("attention", { WG: FLAT_WORKGROUP });
  const merge = await gpu.pipeline("attention_merge", { WG: FLAT_WORKGROUP });
  const scale = args.scale ?? 1 / Math.sqrt(headDim);

  for (let r0 = 0; r0 < rows; r0 += rowsPerPass) {
    const n = Math.min(rowsPerPass, rows - r0);
    const q = bindRange(
      gpu,
      args.q,
      (args.qOffset ?? 0) + r0 * qStride,
      (n - 1) * qStride + nHeads * headDim,
      "attention q",
    );
    const out = bindRange(
      gpu,
      args.out,
      (args.outOffset ?? 0) + r0 * outStride,
      (n - 1) * outStride + nHeads * headDim,
      "attention out",
    );
    const partials = bindRange(gpu, args.scratch, 0, n * rowFloats, "attention scratch");
    const firstParams = batch.uniform(paramWords(
      [
        n,
        nHeads,
        nHeads / nKvHeads,
        headDim,
        qStride,
        q.offset,
        kvStride,
        keys.offset,
        values.offset,
        pos0 + r0,
        plan.nBlocks,
        plan.blockLen,
      ],
      [scale],
    ));
    batch.dispatch(
      first,
      [q.binding, keys.binding, values.binding, partials.binding, firstParams],
      flatGrid(gpu, n * nHeads * plan.nBlocks),
    );
    const mergeParams = batch.uniform(
      paramWords([n, nHeads, headDim, plan.nBlocks, outStride, out.offset]),
    );
    batch.dispatch(
      merge,
      [partials.binding, out.binding, mergeParams],
      flatGrid(gpu, n * nHeads * headDim),
    );
  }
}
