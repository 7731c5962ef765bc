/**
 * Token embedding lookup on the GPU from a row-chunked table. Reference:
 * {@linkcode embeddingRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { bindRange, checkSize, FLAT_WORKGROUP, flatGrid, paramWords } from "./_common.ts";
import type { GpuMatrix } from "./gpu_matrix.ts";
export { embeddingRef } from "./embedding_ref.ts";

/** Operands of {@linkcode embedding}. */
export interface EmbeddingArgs {
  /** Token ids as u32 [tokens] (starting at idsOffset). Ids must be below table.rows. */
  ids: GPUBuffer;
  /** Embedding table [vocab, dim] as row chunks. */
  table: GpuMatrix;
  /** Output rows [tokens, dim]. */
  out: GPUBuffer;
  /** Number of tokens. */
  tokens: number;
  /** Index of the first id in `ids`. Default 0. */
  idsOffset?: number;
  /** Element offset of out[0, 0]. Default 0. */
  outOffset?: number;
}

/**
 * Records out[t, :] = table[ids[t], :], one dispatch per row chunk of the table.
 *
 * @example
 * ```ts ignore
 * await embedding(gpu, batch, { ids, table: embed, out: x, tokens: T });
 * ```
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args Operands and sizes.
 */
export async function embedding(
  gpu: GpuContext,
  batch: GpuBatch,
  args: EmbeddingArgs,
): Promise<void> {
  const { tokens, table } = args;
  checkSize("embedding tokens", tokens);
  const dim = table.cols;
  const ids = bindRange(gpu, args.ids, args.idsOffset ?? 0, tokens, "embedding ids");
  const out = bindRange(gpu, args.out, args.outOffset ?? 0, tokens * dim, "embedding out");
  const pipeline = await gpu.pipeline("embedding", { WG: FLAT_WORKGROUP });
  for (const chunk of table.chunks) {
    const params = batch.uniform(
      paramWords([tokens, dim, chunk.row0, chunk.rows, ids.offset, out.offset]),
    );
    batch.dispatch(
      pipeline,
      [ids.binding, chunk.buffer, out.binding, params],
      flatGrid(gpu, tokens * dim),
    );
  }
}
