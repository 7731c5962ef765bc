/**
 * GGUF constants shared by the reader and the writer: metadata value types, the ggml
 * tensor types this toolkit reads, the tensor-name mapping to Hugging Face names and
 * the rotary convention of each architecture.
 *
 * GGUF v3 layout, little-endian, in file order:
 * - magic "GGUF", u32 version, u64 tensor count, u64 metadata count;
 * - metadata entries: string key, u32 value type, value;
 * - tensor infos: string name, u32 n_dims, u64 ne[n_dims] (innermost first), u32 ggml
 *   type, u64 offset into the data section;
 * - padding to `general.alignment` (default 32), then the data section.
 * A string is a u64 byte length and UTF-8 bytes. An array is a u32 item type, a u64
 * length and the items.
 *
 * @module
 */
import type { RopeStyle } from "../model/config.ts";

/** "GGUF" read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;
/** Versions the reader accepts (v2 and v3 share the layout; v3 adds big-endian files, which are rejected). */
export const GGUF_VERSIONS: readonly number[] = [2, 3];
/** Version the writer produces. */
export const GGUF_WRITE_VERSION = 3;
/** Data-section alignment when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types, by their id in the file. */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** A metadata value type id. */
export type GgufTypeId = typeof GgufType[keyof typeof GgufType];

/** Byte size of each fixed-size metadata type (strings and arrays are variable). */
export const GGUF_SCALAR_BYTES: Readonly<Record<number, number>> = {
  0: 1,
  1: 1,
  2: 2,
  3: 2,
  4: 4,
  5: 4,
  6: 4,
  7: 1,
  10: 8,
  11: 8,
  12: 8,
};

/** A decoded metadata value; 64-bit integers beyond 2^53 stay bigint. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

/** One metadata entry with the types needed to write it back unchanged. */
export interface GgufEntry {
  /** Value type. */
  type: GgufTypeId;
  /** Item type when `type` is ARRAY. */
  itemType?: GgufTypeId;
  /** Decoded value. */
  value: GgufValue;
}

/** ggml tensor types this toolkit reads (and, except BF16, writes). */
export type GgmlType = "F32" | "F16" | "BF16" | "Q8_0";

/** Per-type layout: id in the file, values per block and bytes per block. */
export const GGML_TYPES: Readonly<
  Record<GgmlType, { id: number; blockSize: number; blockBytes: number }>
> = {
  F32: { id: 0, blockSize: 1, blockBytes: 4 },
  F16: { id: 1, blockSize: 1, blockBytes: 2 },
  Q8_0: { id: 8, blockSize: 32, blockBytes: 34 },
  BF16: { id: 30, blockSize: 1, blockBytes: 2 },
};

/** Names of ggml type ids that exist but are not supported, for error messages. */
export const GGML_UNSUPPORTED_NAMES: Readonly<Record<number, string>> = {
  2: "Q4_0",
  3: "Q4_1",
  6: "Q5_0",
  7: "Q5_1",
  9: "Q8_1",
  10: "Q2_K",
  11: "Q3_K",
  12: "Q4_K",
  13: "Q5_K",
  14: "Q6_K",
  15: "Q8_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
  34: "TQ1_0",
  35: "TQ2_0",
  39: "MXFP4",
};

/** Looks up a supported ggml type by id. */
export function ggmlTypeById(id: number): GgmlType | undefined {
  return (Object.keys(GGML_TYPES) as GgmlType[]).find((t) => GGML_TYPES[t].id === id);
}

/** Rotary convention of each supported GGUF architecture: llama.cpp's converter permutes q/k of "llama" to adjacent pairs and keeps "qwen2" in NEOX (half) order. */
export const GGUF_ARCH_ROPE: Readonly<Record<string, RopeStyle>> = {
  llama: "adjacent",
  mistral: "adjacent",
  qwen2: "half",
};

const GLOBAL_NAMES: Readonly<Record<string, string>> = {
  "model.embed_tokens.weight": "token_embd.weight",
  "model.norm.weight": "output_norm.weight",
  "lm_head.weight": "output.weight",
};

const BLOCK_NAMES: Readonly<Record<string, string>> = {
  "input_layernorm.weight": "attn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight",
  "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.v_proj.weight": "attn_v.weight",
  "self_attn.o_proj.weight": "attn_output.weight",
  "self_attn.q_proj.bias": "attn_q.bias",
  "self_attn.k_proj.bias": "attn_k.bias",
  "self_attn.v_proj.bias": "attn_v.bias",
  "post_attention_layernorm.weight": "ffn_norm.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight",
  "mlp.up_proj.weight": "ffn_up.weight",
  "mlp.down_proj.weight": "ffn_down.weight",
};

const BLOCK_NAMES_BACK: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries(BLOCK_NAMES).map(([hf, gguf]) => [gguf, hf]),
);
const GLOBAL_NAMES_BACK: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries(GLOBAL_NAMES).map(([hf, gguf]) => [gguf, hf]),
);

/**
 * Maps a canonical (Hugging Face) tensor name to its llama.cpp GGUF name.
 *
 * @example
 * ```ts
 * import { hfToGgufName } from "./gguf_types.ts";
 * if (hfToGgufName("model.layers.3.mlp.up_proj.weight") !== "blk.3.ffn_up.weight") throw new Error();
 * ```
 * @param name Canonical name.
 * @throws {Error} When the name has no GGUF equivalent.
 */
export function hfToGgufName(name: string): string {
  if (name in GLOBAL_NAMES) return GLOBAL_NAMES[name];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  if (m && m[2] in BLOCK_NAMES) return `blk.${m[1]}.${BLOCK_NAMES[m[2]]}`;
  throw new Error(`Tensor ${name} has no GGUF name`);
}

/**
 * Maps a llama.cpp GGUF tensor name to the canonical name, or undefined when unknown.
 *
 * @param name GGUF tensor name.
 */
export function ggufToHfName(name: string): string | undefined {
  if (name in GLOBAL_NAMES_BACK) return GLOBAL_NAMES_BACK[name];
  const m = /^blk\.(\d+)\.(.+)$/.exec(name);
  if (m && m[2] in BLOCK_NAMES_BACK) return `model.layers.${m[1]}.${BLOCK_NAMES_BACK[m[2]]}`;
  return undefined;
}
