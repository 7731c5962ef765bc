/**
 * Tokenizers from a GGUF file's embedded vocabulary (`tokenizer.ggml.*` metadata):
 * - model "llama": SentencePiece pieces with scores, encoded by the score-merge BPE
 *   (spaces stored as "\u2581", byte fallback through `<0xXX>` pieces).
 * - model "gpt2": byte-level BPE with merges, run by `@huggingface/tokenizers` from a
 *   tokenizer.json description built in memory.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { GgufValue } from "../formats/gguf_types.ts";
import { HfTokenizer } from "./hf_tokenizer.ts";
import { ScoreBpeTokenizer } from "./score_bpe.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** GGUF token types (llama.cpp's llama_token_type). */
const TokenType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** The GPT-2 pre-tokenizer split (tokenizers' ByteLevel `use_regex`). */
const GPT2_SPLIT = null;
/** Pre-tokenizer split patterns by `tokenizer.ggml.pre`, copied from llama.cpp's llama-vocab.cpp. */
const PRE_SPLITS: Readonly<Record<string, string>> = {
  "llama-bpe":
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "smaug-bpe":
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "qwen2":
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

/** Read access to GGUF metadata. */
export interface GgufMetadataSource {
  /** File named in errors. */
  readonly path: string;
  /** Returns the value of `key`, or undefined. */
  get(key: string): GgufValue | undefined;
}

/**
 * Builds the tokenizer a GGUF file embeds.
 *
 * @example
 * ```ts ignore
 * const gguf = await GgufFile.open("model.gguf");
 * const tok = ggufTokenizer(gguf);
 * ```
 * @param meta The file's metadata.
 * @returns The tokenizer, or null when the file has no `tokenizer.ggml.model`.
 * @throws {FormatError} When the vocabulary arrays are missing, mismatched or of an unsupported model.
 */
export function ggufTokenizer(meta: GgufMetadataSource): Tokenizer | null {
  const model = meta.get("tokenizer.ggml.model");
  if (model === undefined || model === "none") return null;

  // vocabulary, token types and special ids shared by both models
  const tokens = stringArray(meta, "tokenizer.ggml.tokens");
  const types = numberArray(meta, "tokenizer.ggml.token_type", tokens.length) ??
    tokens.map(() => TokenType.NORMAL);
  const bosId = optionalId(meta, "tokenizer.ggml.bos_token_id", tokens.length);
  const eosIds = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
    .map((key) => optionalId(meta, key, tokens.length))
    .filter((id, i, all): id is number => id !== undefined && all.indexOf(id) === i);
  const controlIds = types.flatMap((t, id) => (t === TokenType.CONTROL ? [id] : []));
  // llama.cpp matches these verbatim in the input text.
  const specialTypes: number[] = [TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN];
  const specialIds = types.flatMap((t, id) => (specialTypes.includes(t) ? [id] : []));

  if (model === "llama") {
    const scores = numberArray(meta, "tokenizer.ggml.scores", tokens.length);
    if (!scores) {
      throw new FormatError(
        meta.path,
        "tokenizer.ggml.scores",
        'Missing key: a "llama" vocabulary needs piece scores',
      );
    }
    const addSpacePrefix = meta.get("tokenizer.ggml.add_space_prefix");
    return new ScoreBpeTokenizer({
      pieces: tokens,
      scores,
      spaceSymbol: "\u2581",
      bosId,
      eosIds,
      controlIds,
      specialIds,
      unkId: optionalId(meta, "tokenizer.ggml.unknown_token_id", tokens.length) ?? 0,
      addSpacePrefix: addSpacePrefix === undefined ? true : addSpacePrefix === true,
    });
  }

  if (model === "gpt2") {
    const pre = meta.get("tokenizer.ggml.pre");
    const json = byteLevelTokenizerJson(
      tokens,
      types,
      stringArray(meta, "tokenizer.ggml.merges"),
      typeof pre === "string" ? pre : "default",
    );
    const config = {
      bos_token: bosId !== undefined ? tokens[bosId] : undefined,
      eos_token: eosIds.length ? tokens[eosIds[0]] : undefined,
    };
    return HfTokenizer.fromJson(json, config, meta.path, { bosId, eosIds });
  }

  throw new FormatError(
    meta.path,
    "tokenizer.ggml.model",
    `Unsupported tokenizer model ${JSON.stringify(model)}: expected "llama" or "gpt2"`,
  );
}

/**
 * Builds a tokenizer.json object for a GGUF "gpt2" (byte-level BPE) vocabulary.
 *
 * @param tokens Token text of each id (byte-level alphabet, "\u0120" for a space).
 * @param types GGUF token type of each id; control and user-defined tokens become added tokens.
 * @param merges Merge rules "a b", highest priority first.
 * @param pre `tokenizer.ggml.pre`, which selects the split pattern; unknown names use GPT-2's.
 */
export function byteLevelTokenizerJson(
  tokens: readonly string[],
  types: readonly number[],
  merges: readonly string[],
  pre: string,
): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  const added: Record<string, unknown>[] = [];
  tokens.forEach((token, id) => {
    if (types[id] === TokenType.CONTROL || types[id] === TokenType.USER_DEFINED) {
      added.push({
        id,
        content: token,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: types[id] === TokenType.CONTROL,
      });
    }
    if (!(token in vocab)) vocab[token] = id;
  });
  const split = PRE_SPLITS[pre] ?? GPT2_SPLIT;
  // NOTE: pre-tokenizer names missing from PRE_SPLITS fall back to GPT-2's split, which
  // can split some texts differently from llama.cpp for those models.
  const byteLevel = {
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: split === null,
  };
  const preTokenizer = split === null ? byteLevel : {
    type: "Sequence",
    pretokenizers: [{
      type: "Split",
      pattern: { Regex: split },
      behavior: "Isolated",
      invert: false,
    }, byteLevel],
  };
  return {
    version: "1.0",
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      vocab,
      merges: [...merges],
      unk_token: null,
      byte_fallback: false,
      // Llama 3 vocabularies take a whole pre-token when it is a vocabulary entry.
      ignore_merges: pre === "llama-bpe",
    },
  };
}

/** The vocabulary entries `tokenizer.ggml.*` of a GGUF "gpt2" tokenizer. */
export interface ByteLevelVocab {
  /** `tokenizer.ggml.pre`: the split pattern name ("default" for GPT-2's). */
  pre: string;
  /** Token text of each id. */
  tokens: string[];
  /** GGUF token type of each id. */
  types: number[];
  /** Merge rules "a b", highest priority first. */
  merges: string[];
}

/**
 * Extracts a GGUF "gpt2" vocabulary from a tokenizer.json object, the inverse of
 * {@linkcode byteLevelTokenizerJson}. Only descriptions that the GGUF reader rebuilds
 * exactly are accepted: a byte-level BPE without normalizer whose split is GPT-2's or one
 * of the patterns in the pre-tokenizer table.
 *
 * @param json Parsed tokenizer.json.
 * @returns The vocabulary, or null when the tokenizer has another form.
 */
export function byteLevelVocabFromJson(json: Record<string, unknown>): ByteLevelVocab | null {
  const model = json.model as Record<string, unknown> | undefined;
  const decoder = json.decoder as Record<string, unknown> | null | undefined;
  if (model?.type !== "BPE" || json.normalizer || decoder?.type !== "ByteLevel") return null;
  const pre = splitName(json.pre_tokenizer as Record<string, unknown> | null | undefined);
  if (pre === null || (model.ignore_merges === true) !== (pre === "llama-bpe")) return null;

  // Ids come from the BPE vocabulary and the added tokens. Unused ids get llama.cpp's [PAD{id}].
  const vocab = (model.vocab ?? {}) as Record<string, number>;
  const added = (json.added_tokens ?? []) as { id: number; content: string; special?: boolean }[];
  const size = Math.max(-1, ...Object.values(vocab), ...added.map((t) => t.id)) + 1;
  const tokens = Array.from({ length: size }, (_, id) => `[PAD${id}]`);
  const types: number[] = new Array(size).fill(TokenType.NORMAL);
  for (const [token, id] of Object.entries(vocab)) tokens[id] = token;
  for (const t of added) {
    tokens[t.id] = t.content;
    types[t.id] = t.special ? TokenType.CONTROL : TokenType.USER_DEFINED;
  }
  const merges = ((model.merges ?? []) as (string | string[])[]).map((m) =>
    Array.isArray(m) ? m.join(" ") : m
  );
  return { pre, tokens, types, merges };
}

/** Names the split of a byte-level pre-tokenizer, or null when the reader cannot rebuild it. */
function splitName(pre: Record<string, unknown> | null | undefined): string | null {
  if (pre?.type === "ByteLevel") {
    return pre.use_regex === false || pre.add_prefix_space ? null : "default";
  }
  const steps = pre?.type === "Sequence" ? pre.pretokenizers as Record<string, unknown>[] : [];
  if (steps.length !== 2 || steps[0].type !== "Split" || steps[1].type !== "ByteLevel") return null;
  if (
    steps[1].use_regex !== false || steps[1].add_prefix_space || steps[0].behavior !== "Isolated" ||
    steps[0].invert
  ) {
    return null;
  }
  const regex = (steps[0].pattern as { Regex?: string } | undefined)?.Regex;
  // The first table entry with this pattern; llama-bpe and smaug-bpe share theirs.
  return Object.keys(PRE_SPLITS).find((name) => PRE_SPLITS[name] === regex) ?? null;
}

function stringArray(meta: GgufMetadataSource, key: string): string[] {
  const v = meta.get(key);
  if (v === undefined) {
    throw new FormatError(meta.path, key, "Missing key: the embedded vocabulary is incomplete");
  }
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
    throw new FormatError(meta.path, key, "Expected an array of strings");
  }
  return v as string[];
}

function numberArray(meta: GgufMetadataSource, key: string, length: number): number[] | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === "number")) {
    throw new FormatError(meta.path, key, "Expected an array of numbers");
  }
  if (v.length !== length) {
    throw new FormatError(
      meta.path,
      key,
      `Has ${v.length} entries but tokenizer.ggml.tokens has ${length}`,
    );
  }
  return v as number[];
}

function optionalId(meta: GgufMetadataSource, key: string, vocabSize: number): number | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= vocabSize) {
    throw new FormatError(meta.path, key, `Invalid token id ${v}: expected 0 to ${vocabSize - 1}`);
  }
  return v;
}
