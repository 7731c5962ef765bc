/**
 * Writer for Hugging Face model directories: config.json plus model.safetensors, or
 * numbered shards and model.safetensors.index.json when the weights exceed one shard.
 *
 * Rotary convention: the output is always half-split (`rotate_half`), as transformers
 * expects. A model loaded in the adjacent-pair convention (llama2.c, GGUF "llama") has its
 * q_proj/k_proj rows permuted per head, as `convert_llama_weights_to_hf.py` does, so the
 * written checkpoint computes the same logits.
 *
 * The directory is built under a temporary sibling name and renamed into place at the end,
 * so an error never leaves a partial model at the output path.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { UsageError } from "../errors.ts";
import { expectedTensors, type ModelConfig } from "../model/config.ts";
import type { WeightStore } from "../model/model.ts";
import { Progress } from "../util/progress.ts";
import { writeFileAtomic, writeTextFileAtomic } from "../util/atomic_write.ts";
import { type DType, DTYPE_BYTES, encodeFromF32 } from "./dtype.ts";
import { type TensorToWrite, writeSafetensors } from "./safetensors.ts";
import { toHfConfig } from "./hf_config.ts";
import { toRopeStyle } from "./rope_permute.ts";

/** Stored dtypes of the Hugging Face writer. */
export type HfDtype = "f32" | "f16" | "bf16";

const STORED: Record<HfDtype, { dtype: DType; torch: string }> = {
  f32: { dtype: "F32", torch: "float32" },
  f16: { dtype: "F16", torch: "float16" },
  bf16: { dtype: "BF16", torch: "bfloat16" },
};

/** Default shard size limit in bytes. Each shard is assembled in memory, so this bounds peak memory. */
export const DEFAULT_MAX_SHARD_BYTES = 2_000_000_000;

/** Options of {@linkcode writeHf}. */
export interface HfWriteOptions {
  /** Stored dtype. Default "f32". */
  dtype?: HfDtype;
  /** Largest shard in bytes; a single tensor larger than this gets a shard of its own. */
  maxShardBytes?: number;
  /** Extra files copied into the directory by name (tokenizer.json, tokenizer_config.json). */
  files?: Record<string, Uint8Array>;
  /** Chat template, written as chat_template.jinja when given. */
  chatTemplate?: string | null;
  /** Print no progress. Default false. */
  quiet?: boolean;
}

/**
 * Writes a model as a Hugging Face directory at `outDir`, which must not exist yet.
 *
 * @example Write a model and load it back
 * ```ts ignore
 * await writeHf(model, "out/stories-hf", { dtype: "f16" });
 * const back = await loadHf("out/stories-hf");
 * ```
 * @param model Config and weights (any rotary convention).
 * @param outDir Output directory path.
 * @param options Dtype, sharding, extra files and progress.
 * @throws {UsageError} When `outDir` already exists or the dtype is unknown.
 */
export async function writeHf(
  model: { config: ModelConfig; weights: WeightStore },
  outDir: string,
  options: HfWriteOptions = {},
): Promise<void> {
  const dtype = options.dtype ?? "f32";
  if (!(dtype in STORED)) {
    throw new UsageError(
      `Unsupported Hugging Face dtype ${JSON.stringify(dtype)}: expected f32, f16 or bf16`,
    );
  }
  const { config, weights } = model;
  const hfConfig = toHfConfig(config, STORED[dtype].torch, join(outDir, "config.json"));
  if (await exists(outDir)) {
    throw new UsageError(`Output ${outDir} already exists: remove it or choose another path`);
  }
  const tmp = join(dirname(outDir), `.${basename(outDir)}.${Deno.pid}.tmp`);
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await writeTextFileAtomic(join(tmp, "config.json"), JSON.stringify(hfConfig, null, 2) + "\n");
    await writeShards(config, weights, tmp, STORED[dtype].dtype, options);
    for (const [name, bytes] of Object.entries(options.files ?? {})) {
      await writeFileAtomic(join(tmp, name), [bytes]);
    }
    if (options.chatTemplate) {
      await writeTextFileAtomic(join(tmp, "chat_template.jinja"), options.chatTemplate);
    }
    await Deno.rename(tmp, outDir);
  } catch (err) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw err;
  }
}

/** Groups tensors into shards under the size limit, reads and writes one shard at a time. */
async function writeShards(
  config: ModelConfig,
  weights: WeightStore,
  dir: string,
  dtype: DType,
  options: HfWriteOptions,
): Promise<void> {
  const shapes = expectedTensors(config);
  const limit = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const shards: string[][] = [[]];
  let shardBytes = 0, totalBytes = 0;
  for (const [name, shape] of shapes) {
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (shardBytes > 0 && shardBytes + bytes > limit) {
      shards.push([]);
      shardBytes = 0;
    }
    shards[shards.length - 1].push(name);
    shardBytes += bytes;
    totalBytes += bytes;
  }
  const progress = new Progress("write safetensors", shapes.size, {
    quiet: options.quiet,
    unit: "tensors",
  });
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards.length; s++) {
    const file = shards.length === 1
      ? "model.safetensors"
      : `model-${String(s + 1).padStart(5, "0")}-of-${
        String(shards.length).padStart(5, "0")
      }.safetensors`;
    const tensors: Record<string, TensorToWrite> = {};
    for (const name of shards[s]) {
      // Stored [out, in] row-major, the layout of the model description.
      const data = toRopeStyle(config, name, await weights.read(name), config.ropeStyle, "half");
      tensors[name] = { dtype, shape: shapes.get(name)!, data: encodeFromF32(data, dtype) };
      weightMap[name] = file;
      progress.advance(1, name);
    }
    await writeSafetensors(join(dir, file), tensors, { format: "pt" });
  }
  progress.finish();
  if (shards.length > 1) {
    const index = { metadata: { total_size: totalBytes }, weight_map: weightMap };
    await writeTextFileAtomic(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify(index, null, 2) + "\n",
    );
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
