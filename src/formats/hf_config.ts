/**
 * Hugging Face `config.json` to {@linkcode ModelConfig} and back, for the Llama, Mistral
 * and Qwen2 model types. Hugging Face checkpoints use the half-split rotary convention,
 * so the parsed config has `ropeStyle: "half"`.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { type ModelConfig, validateConfig } from "../model/config.ts";

/** Hugging Face `model_type` values this toolkit runs, with their `architectures` class. */
export const HF_ARCHITECTURES: Readonly<Record<string, string>> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
};

/**
 * Parses a config.json object into a model config.
 *
 * Defaults follow the transformers classes: num_key_value_heads = num_attention_heads,
 * head_dim = hidden_size / num_attention_heads, rope_theta = 10000, rms_norm_eps = 1e-6,
 * tie_word_embeddings = false. Mistral's sliding window caps maxSeqLen, because within the
 * window sliding-window attention equals full causal attention.
 *
 * @example
 * ```ts
 * import { parseHfConfig } from "./hf_config.ts";
 * const c = parseHfConfig({ model_type: "llama", hidden_size: 64, intermediate_size: 172,
 *   num_hidden_layers: 2, num_attention_heads: 8, vocab_size: 512,
 *   max_position_embeddings: 512 }, "config.json");
 * if (c.nKvHeads !== 8 || c.headDim !== 8 || c.ropeStyle !== "half") throw new Error();
 * ```
 * @param json Parsed config.json.
 * @param file Path named in errors.
 * @throws {FormatError} On a missing key, an unsupported model type, rope scaling or bias layout.
 */
export function parseHfConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FormatError(file, "", "Expected a JSON object");
  }
  const c = json as Record<string, unknown>;
  const modelType = c.model_type;
  if (typeof modelType !== "string" || !(modelType in HF_ARCHITECTURES)) {
    throw new FormatError(
      file,
      "model_type",
      `Unsupported model type ${JSON.stringify(modelType)}: expected one of ${
        Object.keys(HF_ARCHITECTURES).join(", ")
      }`,
    );
  }
  rejectUnsupported(c, file, modelType);
  const int = (key: string, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (v === undefined || v === null) {
      throw new FormatError(file, key, "Missing key: add it to config.json");
    }
    if (typeof v !== "number" || !Number.isSafeInteger(v)) {
      throw new FormatError(file, key, `Expected an integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== "number") {
      throw new FormatError(file, key, `Expected a number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const dim = int("hidden_size");
  const nHeads = int("num_attention_heads");
  let maxSeqLen = int("max_position_embeddings");
  const window = c.sliding_window;
  const windowUsed = modelType === "mistral" || c.use_sliding_window === true;
  if (windowUsed && typeof window === "number" && window > 0 && window < maxSeqLen) {
    maxSeqLen = window;
  }
  const config: ModelConfig = {
    architecture: modelType,
    dim,
    hiddenDim: int("intermediate_size"),
    nLayers: int("num_hidden_layers"),
    nHeads,
    nKvHeads: int("num_key_value_heads", nHeads),
    headDim: int("head_dim", nHeads > 0 ? Math.floor(dim / nHeads) : 0),
    vocabSize: int("vocab_size"),
    maxSeqLen,
    normEps: num("rms_norm_eps", 1e-6),
    ropeTheta: num("rope_theta", ropeParameter(c, "rope_theta") ?? 10000),
    ropeStyle: "half",
    tiedEmbeddings: c.tie_word_embeddings === true,
    qkvBias: modelType === "qwen2",
    bosId: tokenId(c, "bos_token_id", file)?.[0],
    eosIds: tokenId(c, "eos_token_id", file),
  };
  validateConfig(config, file);
  return config;
}

/** Rejects settings whose computation this toolkit does not implement. */
function rejectUnsupported(c: Record<string, unknown>, file: string, modelType: string): void {
  // transformers 5 moves the rotary settings into `rope_parameters`.
  for (const key of ["rope_scaling", "rope_parameters"]) {
    const scaling = c[key] as Record<string, unknown> | null | undefined;
    const kind = scaling ? scaling.rope_type ?? scaling.type ?? "default" : "default";
    // TODO: linear, dynamic, yarn and llama3 rope scaling are not implemented.
    if (kind !== "default") {
      const detail = `Rope scaling ${JSON.stringify(kind)} is not supported`;
      throw new FormatError(
        file,
        key,
        `${detail}: only unscaled rotary embeddings are implemented`,
      );
    }
  }
  if (c.hidden_act !== undefined && c.hidden_act !== "silu") {
    throw new FormatError(
      file,
      "hidden_act",
      `Activation ${JSON.stringify(c.hidden_act)} is not supported: expected "silu"`,
    );
  }
  if (modelType !== "qwen2" && c.attention_bias === true) {
    throw new FormatError(
      file,
      "attention_bias",
      "Attention biases on a Llama or Mistral model (which include an o_proj bias) are not supported",
    );
  }
  if (c.mlp_bias === true) throw new FormatError(file, "mlp_bias", "MLP biases are not supported");
}

/** Reads a number from transformers 5's `rope_parameters` object. */
function ropeParameter(c: Record<string, unknown>, key: string): number | undefined {
  const value = (c.rope_parameters as Record<string, unknown> | undefined)?.[key];
  return typeof value === "number" ? value : undefined;
}

function tokenId(c: Record<string, unknown>, key: string, file: string): number[] | undefined {
  const v = c[key];
  if (v === undefined || v === null) return undefined;
  const ids = Array.isArray(v) ? v : [v];
  if (!ids.every((id) => Number.isSafeInteger(id) && id >= 0)) {
    throw new FormatError(
      file,
      key,
      `Expected a token id or a list of ids, got ${JSON.stringify(v)}`,
    );
  }
  return ids as number[];
}

/**
 * Builds the config.json object of a model (the inverse of {@linkcode parseHfConfig}).
 *
 * @param config Model hyperparameters.
 * @param torchDtype Stored dtype named in the config ("float32", "float16", "bfloat16").
 * @param file Output path named in errors.
 * @throws {FormatError} When the architecture has no Hugging Face equivalent here.
 */
export function toHfConfig(
  config: ModelConfig,
  torchDtype: string,
  file = "config.json",
): Record<string, unknown> {
  const cls = HF_ARCHITECTURES[config.architecture];
  if (!cls) {
    throw new FormatError(
      file,
      "architecture",
      `Cannot write architecture ${config.architecture}: expected one of ${
        Object.keys(HF_ARCHITECTURES).join(", ")
      }`,
    );
  }
  if (config.qkvBias !== (config.architecture === "qwen2")) {
    const detail = config.qkvBias ? "has no q/k/v biases" : "requires q/k/v biases";
    throw new FormatError(
      file,
      "qkvBias",
      `Architecture ${config.architecture} ${detail} in Hugging Face format`,
    );
  }
  const eos = config.eosIds;
  let eosTokenId: number | number[] | null = null;
  if (eos?.length === 1) eosTokenId = eos[0];
  else if (eos && eos.length > 1) eosTokenId = eos;
  return {
    architectures: [cls],
    model_type: config.architecture,
    hidden_size: config.dim,
    intermediate_size: config.hiddenDim,
    num_hidden_layers: config.nLayers,
    num_attention_heads: config.nHeads,
    num_key_value_heads: config.nKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxSeqLen,
    rms_norm_eps: config.normEps,
    rope_theta: config.ropeTheta,
    rope_scaling: null,
    hidden_act: "silu",
    tie_word_embeddings: config.tiedEmbeddings,
    // MistralConfig defaults to a 4096-token window when the key is absent.
    ...(config.architecture === "mistral" ? { sliding_window: null } : {}),
    bos_token_id: config.bosId ?? null,
    eos_token_id: eosTokenId,
    torch_dtype: torchDtype,
  };
}
