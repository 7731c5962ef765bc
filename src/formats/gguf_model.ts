/**
 * Loads a GGUF file (llama.cpp layout) as a model description: the `{arch}.*` metadata
 * becomes the config, `blk.N.*` tensors are exposed under canonical Hugging Face names
 * with shapes [out, in] (GGUF stores ne = [in, out], the same bytes), and the embedded
 * vocabulary and chat template come along.
 *
 * Rotary convention: architectures "llama" and "mistral" load with `ropeStyle:
 * "adjacent"`, because llama.cpp's converter permutes their q/k rows to adjacent pairs.
 * "qwen2" loads with `ropeStyle: "half"`, because llama.cpp keeps it in NEOX order. The
 * loader itself permutes no weights.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { expectedTensors, type ModelConfig, validateConfig } from "../model/config.ts";
import type { LoadedModel, WeightStore } from "../model/model.ts";
import { ggufTokenizer } from "../tokenizer/gguf_tokenizer.ts";
import { GgufFile } from "./gguf.ts";
import { GGUF_ARCH_ROPE, ggufToHfName, type GgufValue, hfToGgufName } from "./gguf_types.ts";

/** Canonical-name view of a GGUF file's tensors. */
class GgufWeights implements WeightStore {
  readonly source: string;
  #file: GgufFile;
  #shapes: Map<string, number[]>;
  #ggufNames: Map<string, string>;

  constructor(file: GgufFile, shapes: Map<string, number[]>, ggufNames: Map<string, string>) {
    this.source = file.path;
    this.#file = file;
    this.#shapes = shapes;
    this.#ggufNames = ggufNames;
  }

  names(): string[] {
    return [...this.#shapes.keys()];
  }

  shape(name: string): number[] {
    const shape = this.#shapes.get(name);
    if (!shape) throw new FormatError(this.source, name, "Missing tensor");
    return shape;
  }

  read(name: string): Promise<Float32Array> {
    const gguf = this.#ggufNames.get(name);
    if (!gguf) return Promise.reject(new FormatError(this.source, name, "Missing tensor"));
    return this.#file.readF32(gguf);
  }

  close(): void {
    this.#file.close();
  }
}

/**
 * Opens a GGUF model, validating the header, the config keys and every tensor shape
 * against the config before any tensor is read.
 *
 * @example
 * ```ts ignore
 * const model = await loadGguf("stories260K.gguf");
 * console.log(model.config.ropeStyle); // "adjacent"
 * ```
 * @param path File path.
 * @throws {FormatError} On a malformed file, an unsupported architecture or rope scaling,
 *   a missing key, or a tensor that is missing, unknown or of the wrong shape.
 */
export async function loadGguf(path: string): Promise<LoadedModel> {
  const file = await GgufFile.open(path);
  try {
    const config = ggufConfig(file);
    const { shapes, ggufNames } = mapTensors(file, config);
    const chatTemplate = file.get("tokenizer.chat_template");
    return {
      path,
      format: "gguf",
      config,
      weights: new GgufWeights(file, shapes, ggufNames),
      tokenizer: ggufTokenizer(file),
      chatTemplate: typeof chatTemplate === "string" ? chatTemplate : null,
    };
  } catch (err) {
    file.close();
    throw err;
  }
}

/**
 * Builds the model config from `general.architecture` and the `{arch}.*` keys.
 *
 * @param file Open GGUF file.
 * @throws {FormatError} When a required key is missing or a feature is unsupported.
 */
export function ggufConfig(file: GgufFile): ModelConfig {
  const arch = file.get("general.architecture");
  if (typeof arch !== "string" || !(arch in GGUF_ARCH_ROPE)) {
    throw new FormatError(
      file.path,
      "general.architecture",
      `Unsupported architecture ${JSON.stringify(arch)}: expected one of ${
        Object.keys(GGUF_ARCH_ROPE).join(", ")
      }`,
    );
  }
  const int = (key: string, fallback?: number): number => {
    const v: GgufValue | undefined = file.get(`${arch}.${key}`) ?? fallback;
    if (v === undefined) {
      throw new FormatError(
        file.path,
        `${arch}.${key}`,
        "Missing key: re-convert the model with llama.cpp's convert_hf_to_gguf.py",
      );
    }
    if (typeof v !== "number" || !Number.isSafeInteger(v)) {
      throw new FormatError(
        file.path,
        `${arch}.${key}`,
        `Expected an integer, got ${
          Array.isArray(v) ? "an array (per-layer values are not supported)" : String(v)
        }`,
      );
    }
    return v;
  };
  const float = (key: string, fallback?: number): number => {
    const v = file.get(`${arch}.${key}`) ?? fallback;
    if (v === undefined) {
      throw new FormatError(
        file.path,
        `${arch}.${key}`,
        "Missing key: re-convert the model with llama.cpp's convert_hf_to_gguf.py",
      );
    }
    if (typeof v !== "number") {
      throw new FormatError(file.path, `${arch}.${key}`, `Expected a number, got ${String(v)}`);
    }
    return v;
  };
  const scaling = file.get(`${arch}.rope.scaling.type`);
  // TODO: linear, yarn and llama3 (rope_freqs.weight) rope scaling are not implemented.
  if (scaling !== undefined && scaling !== "none") {
    throw new FormatError(
      file.path,
      `${arch}.rope.scaling.type`,
      `Rope scaling ${
        JSON.stringify(scaling)
      } is not supported: only unscaled rotary embeddings are implemented`,
    );
  }
  if (file.tensors.has("rope_freqs.weight")) {
    throw new FormatError(
      file.path,
      "rope_freqs.weight",
      "Llama 3 rope frequency scaling is not supported: only unscaled rotary embeddings are implemented",
    );
  }
  const dim = int("embedding_length");
  const nHeads = int("attention.head_count");
  const headDim = int("attention.key_length", nHeads > 0 ? Math.floor(dim / nHeads) : 0);
  const ropeDims = int("rope.dimension_count", headDim);
  if (ropeDims !== headDim) {
    throw new FormatError(
      file.path,
      `${arch}.rope.dimension_count`,
      `Partial rotary embedding (${ropeDims} of ${headDim} dimensions) is not supported`,
    );
  }
  const embed = file.tensors.get("token_embd.weight");
  if (!embed) throw new FormatError(file.path, "token_embd.weight", "Missing tensor");
  const bos = file.get("tokenizer.ggml.bos_token_id");
  const eos = file.get("tokenizer.ggml.eos_token_id");
  const config: ModelConfig = {
    architecture: arch,
    dim,
    hiddenDim: int("feed_forward_length"),
    nLayers: int("block_count"),
    nHeads,
    nKvHeads: int("attention.head_count_kv", nHeads),
    headDim,
    vocabSize: int("vocab_size", embed.dims[1]),
    maxSeqLen: int("context_length"),
    normEps: float("attention.layer_norm_rms_epsilon"),
    ropeTheta: float("rope.freq_base", 10000),
    ropeStyle: GGUF_ARCH_ROPE[arch],
    tiedEmbeddings: !file.tensors.has("output.weight"),
    qkvBias: file.tensors.has("blk.0.attn_q.bias"),
    bosId: typeof bos === "number" ? bos : undefined,
    eosIds: typeof eos === "number" ? [eos] : undefined,
  };
  validateConfig(config, file.path);
  return config;
}

/** Checks every GGUF tensor against the config and maps canonical names to GGUF names. */
function mapTensors(file: GgufFile, config: ModelConfig) {
  const expected = expectedTensors(config);
  const ggufNames = new Map<string, string>();
  for (const [name, info] of file.tensors) {
    const hf = ggufToHfName(name);
    if (!hf || !expected.has(hf)) {
      throw new FormatError(
        file.path,
        name,
        `Unexpected tensor for architecture ${config.architecture} with ${config.nLayers} layers`,
      );
    }
    // ggml dims are innermost first, so [in, out] in the file is [out, in] row-major.
    const shape = [...info.dims].reverse();
    const want = expected.get(hf)!;
    if (shape.length !== want.length || shape.some((d, i) => d !== want[i])) {
      throw new FormatError(
        file.path,
        name,
        `Shape [${shape}] (ggml ne [${info.dims}]) does not match [${want}] implied by the metadata`,
      );
    }
    ggufNames.set(hf, name);
  }
  for (const name of expected.keys()) {
    if (!ggufNames.has(name)) {
      throw new FormatError(file.path, hfToGgufName(name), "Missing tensor");
    }
  }
  return { shapes: expected, ggufNames };
}
