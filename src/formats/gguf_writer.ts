/**
 * GGUF v3 writer in llama.cpp's layout: `{arch}.*` hyperparameters, `blk.N.*` tensor
 * names, ggml dims [in, out] for [out, in] weights. Tensors are stored as F32, F16 or Q8_0;
 * one-dimensional tensors (norms, biases) stay F32, and with Q8_0 a matrix whose row length
 * is not a multiple of 32 is stored as F16, as llama.cpp's converter falls back.
 *
 * Rotary convention: "llama" and "mistral" files store adjacent pairs and "qwen2" files
 * half-split (NEOX) order, as llama.cpp expects. A source in the other convention has its
 * q/k rows permuted per head, so the file computes the same logits.
 *
 * The file is streamed to a temporary sibling one tensor at a time and renamed at the end.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { FormatError, UsageError } from "../errors.ts";
import { expectedTensors, type ModelConfig } from "../model/config.ts";
import type { WeightStore } from "../model/model.ts";
import { Progress } from "../util/progress.ts";
import { encodeFromF32 } from "./dtype.ts";
import { quantizeQ8_0 } from "./q8_0.ts";
import { toRopeStyle } from "./rope_permute.ts";
import {
  GGML_TYPES,
  type GgmlType,
  GGUF_ARCH_ROPE,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_SCALAR_BYTES,
  GGUF_WRITE_VERSION,
  type GgufEntry,
  GgufType,
  type GgufValue,
  hfToGgufName,
} from "./gguf_types.ts";

/** Stored precision of the GGUF writer. */
export type GgufDtype = "f32" | "f16" | "q8_0";

/** llama.cpp's `general.file_type` (LLAMA_FTYPE) of each dtype. */
const FILE_TYPE: Record<GgufDtype, number> = { f32: 0, f16: 1, q8_0: 7 };

/** Options of {@linkcode writeGguf}. */
export interface GgufWriteOptions {
  /** Stored precision of matrices. Default "f32". */
  dtype?: GgufDtype;
  /** Data alignment in bytes, a power of two. Default 32. */
  alignment?: number;
  /** Extra metadata (for example `tokenizer.ggml.*`); keys the writer derives from the config win. */
  metadata?: ReadonlyMap<string, GgufEntry>;
  /** Chat template stored as `tokenizer.chat_template`. */
  chatTemplate?: string | null;
  /** Model name stored as `general.name`. */
  name?: string;
  /** Print no progress. Default false. */
  quiet?: boolean;
}

/**
 * Chooses the stored ggml type of a tensor.
 *
 * @param shape Canonical shape, outermost first.
 * @param dtype Requested precision.
 */
export function storedGgmlType(shape: readonly number[], dtype: GgufDtype): GgmlType {
  if (shape.length === 1 || dtype === "f32") return "F32";
  if (dtype === "q8_0" && shape[shape.length - 1] % GGML_TYPES.Q8_0.blockSize === 0) return "Q8_0";
  return "F16";
}

/**
 * Writes a model as a GGUF file, atomically.
 *
 * @example
 * ```ts ignore
 * await writeGguf(model, "stories260K.q8_0.gguf", { dtype: "q8_0" });
 * ```
 * @param model Config and weights (any rotary convention).
 * @param path Output file.
 * @param options Precision, alignment, extra metadata and progress.
 * @throws {UsageError} On an unknown dtype or an alignment that is not a power of two.
 * @throws {FormatError} When the architecture has no GGUF equivalent here.
 */
export async function writeGguf(
  model: { config: ModelConfig; weights: WeightStore },
  path: string,
  options: GgufWriteOptions = {},
): Promise<void> {
  const { config, weights } = model;
  const dtype = options.dtype ?? "f32";
  if (!(dtype in FILE_TYPE)) {
    throw new UsageError(
      `Unsupported GGUF dtype ${JSON.stringify(dtype)}: expected f32, f16 or q8_0`,
    );
  }
  const alignment = options.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  if (!(Number.isInteger(alignment) && alignment > 0 && (alignment & (alignment - 1)) === 0)) {
    throw new UsageError(`Alignment ${alignment} is not a power of two`);
  }
  const targetStyle = GGUF_ARCH_ROPE[config.architecture];
  if (!targetStyle) {
    throw new FormatError(
      path,
      "general.architecture",
      `Cannot write architecture ${config.architecture}: expected one of ${
        Object.keys(GGUF_ARCH_ROPE).join(", ")
      }`,
    );
  }

  // Tensor table: canonical order, ggml dims innermost first, aligned offsets.
  const tensors = [...expectedTensors(config)].map(([name, shape]) => {
    const type = storedGgmlType(shape, dtype);
    const count = shape.reduce((a, b) => a * b, 1);
    return {
      name,
      shape,
      type,
      byteLength: (count / GGML_TYPES[type].blockSize) * GGML_TYPES[type].blockBytes,
      offset: 0,
    };
  });
  let offset = 0;
  for (const t of tensors) {
    t.offset = offset;
    offset += alignUp(t.byteLength, alignment);
  }

  const header = new ByteBuilder();
  const metadata = buildMetadata(config, dtype, alignment, options);
  header.u32(GGUF_MAGIC).u32(GGUF_WRITE_VERSION).u64(tensors.length).u64(metadata.size);
  for (const [key, entry] of metadata) header.string(key).entry(entry);
  for (const t of tensors) {
    header.string(hfToGgufName(t.name)).u32(t.shape.length);
    for (const d of [...t.shape].reverse()) header.u64(d);
    header.u32(GGML_TYPES[t.type].id).u64(t.offset);
  }
  header.pad(alignment);

  const tmp = join(dirname(path), `.${basename(path)}.${Deno.pid}.tmp`);
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await writeAll(file, header.bytes());
    const progress = new Progress("write gguf", tensors.length, {
      quiet: options.quiet,
      unit: "tensors",
    });
    for (const t of tensors) {
      // Canonical [out, in] row-major data is ggml's layout for ne = [in, out].
      const data = toRopeStyle(
        config,
        t.name,
        await weights.read(t.name),
        config.ropeStyle,
        targetStyle,
      );
      const bytes = t.type === "Q8_0" ? quantizeQ8_0(data) : encodeFromF32(data, t.type);
      await writeAll(file, bytes);
      await writeAll(file, new Uint8Array(alignUp(bytes.length, alignment) - bytes.length));
      progress.advance(1, t.name);
    }
    progress.finish();
    await file.sync();
    file.close();
  } catch (err) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await Deno.rename(tmp, path);
}

/** Metadata in llama.cpp's order: general, hyperparameters, tokenizer. */
function buildMetadata(
  config: ModelConfig,
  dtype: GgufDtype,
  alignment: number,
  options: GgufWriteOptions,
): Map<string, GgufEntry> {
  const arch = config.architecture;
  const u32 = (value: number): GgufEntry => ({ type: GgufType.UINT32, value });
  const f32 = (value: number): GgufEntry => ({ type: GgufType.FLOAT32, value });

  // general
  const own = new Map<string, GgufEntry>();
  own.set("general.architecture", { type: GgufType.STRING, value: arch });
  if (options.name) own.set("general.name", { type: GgufType.STRING, value: options.name });
  own.set("general.file_type", u32(FILE_TYPE[dtype]));
  if (alignment !== GGUF_DEFAULT_ALIGNMENT) own.set("general.alignment", u32(alignment));

  // hyperparameters, under the architecture's prefix
  own.set(`${arch}.vocab_size`, u32(config.vocabSize));
  own.set(`${arch}.context_length`, u32(config.maxSeqLen));
  own.set(`${arch}.embedding_length`, u32(config.dim));
  own.set(`${arch}.block_count`, u32(config.nLayers));
  own.set(`${arch}.feed_forward_length`, u32(config.hiddenDim));
  own.set(`${arch}.attention.head_count`, u32(config.nHeads));
  own.set(`${arch}.attention.head_count_kv`, u32(config.nKvHeads));
  own.set(`${arch}.attention.key_length`, u32(config.headDim));
  own.set(`${arch}.attention.value_length`, u32(config.headDim));
  own.set(`${arch}.attention.layer_norm_rms_epsilon`, f32(config.normEps));
  own.set(`${arch}.rope.freq_base`, f32(config.ropeTheta));
  own.set(`${arch}.rope.dimension_count`, u32(config.headDim));

  // special tokens and chat template
  if (config.bosId !== undefined) own.set("tokenizer.ggml.bos_token_id", u32(config.bosId));
  if (config.eosIds?.length) own.set("tokenizer.ggml.eos_token_id", u32(config.eosIds[0]));
  if (options.chatTemplate) {
    own.set("tokenizer.chat_template", { type: GgufType.STRING, value: options.chatTemplate });
  }

  // caller entries (the vocabulary), except keys derived above
  const out = new Map(own);
  for (const [key, entry] of options.metadata ?? []) {
    if (!own.has(key) && key !== "general.alignment") {
      out.set(key, entry);
    }
  }
  return out;
}

/** Growable little-endian byte buffer for the header. */
class ByteBuilder {
  #buf = new Uint8Array(1024);
  #view = new DataView(this.#buf.buffer);
  #len = 0;

  #reserve(n: number): number {
    if (this.#len + n > this.#buf.length) {
      const bigger = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
      bigger.set(this.#buf.subarray(0, this.#len));
      this.#buf = bigger;
      this.#view = new DataView(bigger.buffer);
    }
    this.#len += n;
    return this.#len - n;
  }

  u32(v: number): this {
    return this.value(GgufType.UINT32, v);
  }

  u64(v: number | bigint): this {
    return this.value(GgufType.UINT64, v);
  }

  string(s: string): this {
    const bytes = new TextEncoder().encode(s);
    this.u64(bytes.length);
    const p = this.#reserve(bytes.length);
    this.#buf.set(bytes, p);
    return this;
  }

  entry(e: GgufEntry): this {
    this.u32(e.type);
    if (e.type !== GgufType.ARRAY) return this.value(e.type, e.value);
    const items = e.value as GgufValue[];
    this.u32(e.itemType!).u64(items.length);
    for (const item of items) this.value(e.itemType!, item);
    return this;
  }

  value(type: number, v: GgufValue): this {
    if (type === GgufType.STRING) return this.string(v as string);
    const size = GGUF_SCALAR_BYTES[type];
    if (size === undefined) throw new Error(`Cannot write GGUF value type ${type}`);
    // Reserve first: it may replace the buffer and its view.
    const p = this.#reserve(size);
    const view = this.#view;
    switch (type) {
      case GgufType.UINT8:
        view.setUint8(p, v as number);
        break;
      case GgufType.INT8:
        view.setInt8(p, v as number);
        break;
      case GgufType.UINT16:
        view.setUint16(p, v as number, true);
        break;
      case GgufType.INT16:
        view.setInt16(p, v as number, true);
        break;
      case GgufType.UINT32:
        view.setUint32(p, v as number, true);
        break;
      case GgufType.INT32:
        view.setInt32(p, v as number, true);
        break;
      case GgufType.FLOAT32:
        view.setFloat32(p, v as number, true);
        break;
      case GgufType.BOOL:
        view.setUint8(p, v ? 1 : 0);
        break;
      case GgufType.UINT64:
        view.setBigUint64(p, BigInt(v as number | bigint), true);
        break;
      case GgufType.INT64:
        view.setBigInt64(p, BigInt(v as number | bigint), true);
        break;
      case GgufType.FLOAT64:
        view.setFloat64(p, v as number, true);
        break;
      default:
        throw new Error(`Cannot write GGUF value type ${type}`);
    }
    return this;
  }

  pad(alignment: number): void {
    this.#reserve(alignUp(this.#len, alignment) - this.#len);
  }

  bytes(): Uint8Array {
    return this.#buf.subarray(0, this.#len);
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
}
