/**
 * The one in-memory description of a Llama-family model that every loader produces:
 * hyperparameters plus the canonical (Hugging Face) tensor names.
 *
 * Rotary embedding comes in two conventions, and the loaders keep the one their file
 * format uses rather than permuting weights:
 * - `adjacent`: pairs (2i, 2i+1) of each head rotate together (llama2.c, GGUF "llama").
 * - `half`: pairs (i, i + headDim/2) rotate together (Hugging Face `rotate_half`).
 *
 * @module
 */
import { FormatError } from "../errors.ts";

/** Rotary embedding pairing convention; see the module documentation. */
export type RopeStyle = "adjacent" | "half";

/** Hyperparameters of a Llama-family decoder. */
export interface ModelConfig {
  /** Architecture family name: "llama", "mistral", "qwen2". */
  architecture: string;
  /** Model width d_model. */
  dim: number;
  /** SwiGLU hidden size. */
  hiddenDim: number;
  /** Number of transformer blocks. */
  nLayers: number;
  /** Number of query heads. */
  nHeads: number;
  /** Number of key/value heads (grouped-query attention when below nHeads). */
  nKvHeads: number;
  /** Width of one attention head. */
  headDim: number;
  /** Vocabulary size. */
  vocabSize: number;
  /** Maximum context length in tokens. */
  maxSeqLen: number;
  /** RMSNorm epsilon. */
  normEps: number;
  /** Rotary embedding base theta. */
  ropeTheta: number;
  /** Rotary pairing convention. */
  ropeStyle: RopeStyle;
  /** Whether the output head reuses the token embedding. */
  tiedEmbeddings: boolean;
  /** Whether q, k and v projections carry a bias (Qwen2). */
  qkvBias: boolean;
  /** Beginning-of-sequence token id, when the model has one. */
  bosId?: number;
  /** End-of-sequence token ids. */
  eosIds?: number[];
}

/** Names of the linear layers inside one block, in forward order. */
export const BLOCK_LINEARS = [
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.gate_proj",
  "mlp.up_proj",
  "mlp.down_proj",
] as const;

/** Canonical tensor names (Hugging Face Llama layout, weights stored [out, in]). */
export const tensorNames = {
  embed: "model.embed_tokens.weight",
  finalNorm: "model.norm.weight",
  lmHead: "lm_head.weight",
  attnNorm: (l: number) => `model.layers.${l}.input_layernorm.weight`,
  ffnNorm: (l: number) => `model.layers.${l}.post_attention_layernorm.weight`,
  linear: (l: number, which: typeof BLOCK_LINEARS[number]) => `model.layers.${l}.${which}.weight`,
  bias: (l: number, which: "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj") =>
    `model.layers.${l}.${which}.bias`,
};

/**
 * Lists every tensor a model with `config` has, with its shape [rows, cols] or [len].
 *
 * @example
 * ```ts
 * import { expectedTensors } from "./config.ts";
 * const c = { architecture: "llama", dim: 8, hiddenDim: 16, nLayers: 1, nHeads: 2, nKvHeads: 1,
 *   headDim: 4, vocabSize: 10, maxSeqLen: 32, normEps: 1e-5, ropeTheta: 10000,
 *   ropeStyle: "half" as const, tiedEmbeddings: true, qkvBias: false };
 * if (expectedTensors(c).get("model.layers.0.self_attn.k_proj.weight")![0] !== 4) throw new Error();
 * ```
 * @param config Model hyperparameters.
 * @returns Map from canonical name to shape.
 */
export function expectedTensors(config: ModelConfig): Map<string, number[]> {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, vocabSize } = config;
  const q = nHeads * headDim, kv = nKvHeads * headDim;
  const m = new Map<string, number[]>();
  m.set(tensorNames.embed, [vocabSize, dim]);
  for (let l = 0; l < config.nLayers; l++) {
    m.set(tensorNames.attnNorm(l), [dim]);
    m.set(tensorNames.linear(l, "self_attn.q_proj"), [q, dim]);
    m.set(tensorNames.linear(l, "self_attn.k_proj"), [kv, dim]);
    m.set(tensorNames.linear(l, "self_attn.v_proj"), [kv, dim]);
    m.set(tensorNames.linear(l, "self_attn.o_proj"), [dim, q]);
    if (config.qkvBias) {
      m.set(tensorNames.bias(l, "self_attn.q_proj"), [q]);
      m.set(tensorNames.bias(l, "self_attn.k_proj"), [kv]);
      m.set(tensorNames.bias(l, "self_attn.v_proj"), [kv]);
    }
    m.set(tensorNames.ffnNorm(l), [dim]);
    m.set(tensorNames.linear(l, "mlp.gate_proj"), [hiddenDim, dim]);
    m.set(tensorNames.linear(l, "mlp.up_proj"), [hiddenDim, dim]);
    m.set(tensorNames.linear(l, "mlp.down_proj"), [dim, hiddenDim]);
  }
  m.set(tensorNames.finalNorm, [dim]);
  if (!config.tiedEmbeddings) m.set(tensorNames.lmHead, [vocabSize, dim]);
  return m;
}

/**
 * Checks that a config is self-consistent, naming the first bad field.
 *
 * @param config Config to check.
 * @param file File the config came from, for the error message.
 * @throws {FormatError} When a size is not a positive integer or heads do not divide.
 */
export function validateConfig(config: ModelConfig, file: string): void {
  const positive = [
    "dim",
    "hiddenDim",
    "nLayers",
    "nHeads",
    "nKvHeads",
    "headDim",
    "vocabSize",
    "maxSeqLen",
  ] as const;
  for (const key of positive) {
    const v = config[key];
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new FormatError(file, key, `Expected a positive integer, got ${v}`);
    }
  }
  if (config.nHeads % config.nKvHeads !== 0) {
    throw new FormatError(
      file,
      "nKvHeads",
      `${config.nKvHeads} key/value heads do not divide ${config.nHeads} query heads`,
    );
  }
  if (config.headDim % 2 !== 0) {
    throw new FormatError(
      file,
      "headDim",
      `Rotary embedding needs an even head width, got ${config.headDim}`,
    );
  }
  if (!(config.normEps > 0) || !(config.ropeTheta > 0)) {
    throw new FormatError(
      file,
      "normEps/ropeTheta",
      `Expected positive values, got ${config.normEps} and ${config.ropeTheta}`,
    );
  }
}
