/**
 * Token embedding lookup x_t = E[tokens[t]] and its gradient, a scatter-add of dx rows
 * into the rows of dE (a token that occurs twice receives both rows): the f64 reference
 * and the WebGPU kernel embedding_backward.wgsl.
 *
 * Shapes: E, dE [vocab, dim]; x, dx [T, dim]; tokens [T].
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { checkSize, FLAT_WORKGROUP, flatGrid, LOOP_BUDGET, paramWords } from "./_common.ts";
import type { GpuMatrix } from "./gpu_matrix.ts";

/**
 * Gathers the embedding rows of `tokens`.
 *
 * @example
 * ```ts
 * import { embeddingForward64 } from "./embedding_backward.ts";
 * const x = embeddingForward64(new Float64Array([1, 2, 3, 4]), 2, [1]);
 * if (x[0] !== 3) throw new Error("row 1 starts with 3");
 * ```
 * @param table Embedding [vocab, dim].
 * @param dim Row width.
 * @param tokens Token ids.
 * @returns x [T, dim].
 */
export function embeddingForward64(
  table: ArrayLike<number>,
  dim: number,
  tokens: ArrayLike<number>,
): Float64Array {
  const x = new Float64Array(tokens.length * dim);
  for (let t = 0; t < tokens.length; t++) {
    for (let i = 0; i < dim; i++) x[t * dim + i] = table[tokens[t] * dim + i];
  }
  return x;
}

/**
 * Adds each row of dx into row tokens[t] of dTable.
 *
 * @param dTable Gradient of the embedding [vocab, dim], accumulated in place.
 * @param dx Gradient of the gathered rows [T, dim].
 * @param dim Row width.
 * @param tokens Token ids.
 */
export function embeddingBackward64(
  dTable: Float64Array,
  dx: Float64Array,
  dim: number,
  tokens: ArrayLike<number>,
): void {
  for (let t = 0; t < tokens.length; t++) {
    for (let i = 0; i < dim; i++) dTable[tokens[t] * dim + i] += dx[t * dim + i];
  }
}

/** Operands of {@linkcode embeddingBackward}. */
export interface EmbeddingBackwardArgs {
  /** Token ids as u32 [tokens]. */
  ids: GPUBuffer;
  /** Gradient of the gathered rows [tokens, dim]. */
  dx: GPUBuffer;
  /** Gradient of the table [vocab, dim] as row chunks, accumulated. */
  table: GpuMatrix;
  /** Number of tokens. */
  tokens: number;
}

/**
 * Records the scatter-add of dx rows into the table gradient, one dispatch per row chunk
 * of the table and per LOOP_BUDGET tokens.
 *
 * @example
 * ```ts ignore
 * await embeddingBackward(gpu, batch, { ids, dx, table: dEmbed, tokens: T });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function embeddingBackward(
  gpu: GpuContext,
  batch: GpuBatch,
  args: EmbeddingBackwardArgs,
): Promise<void> {
  const { tokens, table } = args;
  checkSize("embeddingBackward tokens", tokens);
  const pipeline = await gpu.pipeline("embedding_backward", { WG: FLAT_WORKGROUP });
  for (const chunk of table.chunks) {
    for (let t0 = 0; t0 < tokens; t0 += LOOP_BUDGET) {
      const params = batch.uniform(
        paramWords([Math.min(LOOP_BUDGET, tokens - t0), table.cols, t0, chunk.row0, chunk.rows]),
      );
      batch.dispatch(
        pipeline,
        [args.ids, args.dx, chunk.buffer, params],
        flatGrid(gpu, table.cols),
      );
    }
  }
}
