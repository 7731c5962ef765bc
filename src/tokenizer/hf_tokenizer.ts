/**
 * Hugging Face `tokenizer.json` tokenizers, run by the `@huggingface/tokenizers` package
 * (a JavaScript port of the Rust `tokenizers` crate: BPE, Unigram and WordPiece models,
 * byte-level and Metaspace pre-tokenizers, added special tokens).
 *
 * BOS is never added by the tokenizer.json post-processor here: `encode` runs with
 * `add_special_tokens: false` and prepends `bosId` only on request, so every
 * tokenizer of the toolkit behaves the same way.
 *
 * @module
 */
import { Tokenizer as LibTokenizer } from "@huggingface/tokenizers";
import { join } from "node:path";
import { FormatError } from "../errors.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Special-token ids to use when tokenizer_config.json does not name them. */
export interface HfTokenizerDefaults {
  /** BOS id from the model config. */
  bosId?: number;
  /** EOS ids from the model config. */
  eosIds?: number[];
}

/**
 * A tokenizer.json tokenizer.
 *
 * @example Word-level round trip
 * ```ts
 * import { HfTokenizer } from "./hf_tokenizer.ts";
 * const json = {
 *   model: { type: "WordLevel", vocab: { "<unk>": 0, hello: 1, world: 2 }, unk_token: "<unk>" },
 *   normalizer: null, pre_tokenizer: { type: "Whitespace" }, post_processor: null,
 *   decoder: null, added_tokens: [],
 * };
 * const tok = HfTokenizer.fromJson(json, {}, "mem");
 * if (tok.encode("hello world").join() !== "1,2") throw new Error("bad split");
 * ```
 */
export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: readonly number[];
  /** BOS text from tokenizer_config.json, for chat templates ("" when none). */
  readonly bosToken: string;
  /** EOS text from tokenizer_config.json, for chat templates ("" when none). */
  readonly eosToken: string;
  #lib: LibTokenizer;
  /** Id of the model's unknown token, or undefined when it has none. */
  #unkId: number | undefined;

  private constructor(
    lib: LibTokenizer,
    config: Record<string, unknown>,
    defaults: HfTokenizerDefaults,
    unkToken: unknown,
  ) {
    this.#lib = lib;
    this.#unkId = typeof unkToken === "string" ? lib.token_to_id(unkToken) : undefined;
    let maxId = -1;
    for (const id of lib.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.bosToken = specialTokenText(config.bos_token);
    this.eosToken = specialTokenText(config.eos_token);
    this.bosId = (this.bosToken ? lib.token_to_id(this.bosToken) : undefined) ?? defaults.bosId;
    const eos = this.eosToken ? lib.token_to_id(this.eosToken) : undefined;
    this.eosIds = eos !== undefined ? [eos] : defaults.eosIds ?? [];
  }

  /**
   * Builds a tokenizer from parsed tokenizer.json and tokenizer_config.json objects.
   *
   * @param tokenizerJson Parsed tokenizer.json.
   * @param tokenizerConfig Parsed tokenizer_config.json ({} when absent).
   * @param source File named in errors.
   * @param defaults BOS/EOS ids used when tokenizer_config.json names none.
   * @throws {FormatError} When the package rejects the tokenizer description.
   */
  static fromJson(
    tokenizerJson: unknown,
    tokenizerConfig: Record<string, unknown>,
    source: string,
    defaults: HfTokenizerDefaults = {},
  ): HfTokenizer {
    const json = { added_tokens: [], ...(tokenizerJson as Record<string, unknown>) };
    let lib: LibTokenizer;
    try {
      lib = new LibTokenizer(json, tokenizerConfig);
    } catch (err) {
      throw new FormatError(
        source,
        "",
        `Unsupported or invalid tokenizer description: ${(err as Error).message}`,
      );
    }
    const model = (json as { model?: { unk_token?: unknown } }).model;
    return new HfTokenizer(lib, tokenizerConfig, defaults, model?.unk_token);
  }

  /**
   * Loads `tokenizer.json` (and `tokenizer_config.json` when present) from a model directory.
   *
   * @param dir Model directory.
   * @param defaults BOS/EOS ids used when tokenizer_config.json names none.
   * @returns The tokenizer, or null when the directory has no tokenizer.json.
   * @throws {FormatError} When a file is not valid JSON or not a supported tokenizer.
   */
  static async fromDirectory(
    dir: string,
    defaults: HfTokenizerDefaults = {},
  ): Promise<HfTokenizer | null> {
    const jsonPath = join(dir, "tokenizer.json");
    const tokenizerJson = await readJsonIfPresent(jsonPath);
    if (tokenizerJson === undefined) return null;
    const config = await readJsonIfPresent(join(dir, "tokenizer_config.json")) ?? {};
    return HfTokenizer.fromJson(
      tokenizerJson,
      config as Record<string, unknown>,
      jsonPath,
      defaults,
    );
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const raw: (number | null | undefined)[] =
      this.#lib.encode(text, { add_special_tokens: false }).ids;
    // @huggingface/tokenizers 0.2 returns null, not the unk id, for a word-level piece
    // outside the vocabulary (such as the decoded text "<unk>" itself).
    const ids = raw.map((id) => {
      if (typeof id === "number") return id;
      if (this.#unkId === undefined) {
        throw new FormatError(
          "tokenizer.json",
          "model.unk_token",
          `Text ${
            JSON.stringify(text)
          } has a piece outside the vocabulary and the tokenizer has no unknown token`,
        );
      }
      return this.#unkId;
    });
    return options.addBos && this.bosId !== undefined ? [this.bosId, ...ids] : ids;
  }

  decode(ids: readonly number[]): string {
    // The package rejects an empty list, so handle it here.
    if (ids.length === 0) return "";
    return this.#lib.decode([...ids], {
      skip_special_tokens: true,
      clean_up_tokenization_spaces: false,
    });
  }

  /**
   * Returns the id of a token string, or undefined when it is not in the vocabulary.
   *
   * @param token Token text as stored in tokenizer.json.
   */
  tokenToId(token: string): number | undefined {
    return this.#lib.token_to_id(token);
  }
}

/** Reads a special token given as a string or as an AddedToken object `{content}`. */
function specialTokenText(value: unknown): string {
  if (typeof value === "string") return value;
  if (
    value && typeof value === "object" &&
    typeof (value as { content?: unknown }).content === "string"
  ) {
    return (value as { content: string }).content;
  }
  return "";
}

/**
 * Reads and parses a JSON file, or returns undefined when it does not exist.
 *
 * @param path File path.
 * @throws {FormatError} When the file exists but is not valid JSON.
 */
export async function readJsonIfPresent(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FormatError(path, "", `Invalid JSON: ${(err as Error).message}`);
  }
}
