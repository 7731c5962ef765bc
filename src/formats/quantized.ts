/**
 * The quantized-model file: one safetensors file whose metadata describes every quantized
 * linear layer, with the unquantized tensors (embeddings, norms, head) stored as they were.
 * docs/format.md specifies it in full. This module re-exports its parts: the types
 * (quantized_types.ts), index packing (quantized_pack.ts), the writer
 * (quantized_writer.ts), the validating reader (quantized_reader.ts) and dequantization
 * (quantized_dequantize.ts).
 *
 * A vector-quantized layer with prefix P (for example "model.layers.0.self_attn.q_proj")
 * stores `P.scales` F16 [rows] and, when several channel groups reorder its rows,
 * `P.channel_order` U32 [ceil(rows * ceil(log2 rows) / 32)]: the order bit-packed like
 * indices.
 * Each channel group g and stage s stores packed indices `P.indices.g{g}.s{s}` U32 [words].
 * Groups name their F16 [K, v] codebooks by tensor name, so one codebook can serve several
 * groups and layers (`--codebook-scope` stores a shared codebook once, under a name such as
 * `codebooks.block.0.g0.s0`). A uniformly quantized layer stores `P.qweight` U32
 * [rows, words per row], and `P.scales` and `P.zeros` F16 [rows, groups].
 *
 * @example Pack and unpack indices
 * ```ts
 * import { packIndices, unpackIndices } from "./quantized.ts";
 * const words = packIndices([5, 0, 7], 3);
 * if (unpackIndices(words, 3, 3).join() !== "5,0,7") throw new Error("round trip failed");
 * ```
 *
 * @module
 */
export * from "./quantized_types.ts";
export * from "./quantized_pack.ts";
export * from "./quantized_writer.ts";
export * from "./quantized_reader.ts";
export * from "./quantized_dequantize.ts";
