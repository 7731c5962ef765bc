/**
 * Evaluation and calibration data from files: token-id files (a JSON array, or raw
 * little-endian uint32) checked against the model's vocabulary, and text files encoded
 * with the model's tokenizer.
 *
 * The kind is chosen by extension:
 * - `.json`: an array of integer ids, or an array of such arrays (one document each).
 * - `.bin`, `.u32`: raw little-endian uint32 ids, 4 bytes each, no header.
 * - anything else: UTF-8 text, encoded with BOS prepended when the tokenizer has one.
 *
 * {@linkcode readCorpusTokens} reads the npm corpus, which `--data corpus` names.
 *
 * @module
 */
import { extname } from "node:path";
import { FormatError, UsageError } from "../errors.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import {
  CORPUS_CHARS_PER_TOKEN,
  CORPUS_DATA,
  loadNpmCorpus,
  sampleCorpusText,
  splitHeldOut,
} from "./corpus.ts";

/** Interpretation of a data file, chosen by its extension. */
export type TokenFileKind = "json" | "u32" | "text";

/** Options of {@linkcode readTokenFile}. */
export interface TokenFileOptions {
  /** The model's vocabulary size; every id must lie in [0, vocabSize). */
  vocabSize: number;
  /** Tokenizer for text files; null or absent when the model has none. */
  tokenizer?: Tokenizer | null;
}

/**
 * Returns how `path` is read, from its extension.
 *
 * @example
 * ```ts
 * import { tokenFileKind } from "./token_files.ts";
 * if (tokenFileKind("ids.U32") !== "u32" || tokenFileKind("wiki.test.raw") !== "text") throw new Error();
 * ```
 * @param path File path.
 */
export function tokenFileKind(path: string): TokenFileKind {
  const ext = extname(path).toLowerCase();
  if (ext === ".json") return "json";
  if (ext === ".bin" || ext === ".u32") return "u32";
  return "text";
}

/**
 * Reads a data file as token-id documents, each checked against the vocabulary.
 *
 * @example Read a JSON id file
 * ```ts
 * import { readTokenFile } from "./token_files.ts";
 * const path = await Deno.makeTempFile({ suffix: ".json" });
 * await Deno.writeTextFile(path, "[1, 5, 7]");
 * const [doc] = await readTokenFile(path, { vocabSize: 8 });
 * if (doc.join(",") !== "1,5,7") throw new Error("wrong ids");
 * ```
 * @param path A `.json`, `.bin`/`.u32` or text file.
 * @param options Vocabulary size and tokenizer.
 * @returns One Int32Array per document (a JSON array of arrays gives several; every other
 *   file gives one), none empty.
 * @throws {FormatError} When the file is missing, empty or malformed, or an id is outside
 *   the vocabulary; the message names the file and the element.
 * @throws {UsageError} For a text file when the model has no tokenizer.
 */
export async function readTokenFile(
  path: string,
  options: TokenFileOptions,
): Promise<Int32Array[]> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new FormatError(path, "", "Data file not found: check the --data path");
    }
    throw err;
  }
  if (bytes.length === 0) {
    throw new FormatError(path, "", "File is empty: it contains no tokens to evaluate");
  }

  const kind = tokenFileKind(path);
  if (kind === "u32") return [parseU32(path, bytes, options.vocabSize)];
  if (kind === "json") return parseJson(path, bytes, options.vocabSize);
  return [encodeText(path, bytes, options)];
}

function parseU32(path: string, bytes: Uint8Array, vocabSize: number): Int32Array {
  if (bytes.length % 4 !== 0) {
    throw new FormatError(
      path,
      "file size",
      `${bytes.length} bytes is not a multiple of 4: .bin and .u32 data files hold raw little-endian uint32 token ids`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ids = new Int32Array(bytes.length / 4);
  for (let i = 0; i < ids.length; i++) {
    const id = view.getUint32(4 * i, true);
    if (id >= vocabSize) {
      throw outOfVocabulary(path, `token ${i} (byte offset ${4 * i})`, id, vocabSize);
    }
    ids[i] = id;
  }
  return ids;
}

function parseJson(path: string, bytes: Uint8Array, vocabSize: number): Int32Array[] {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new FormatError(path, "", `Invalid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(value)) {
    throw new FormatError(
      path,
      "top level",
      `Expected a JSON array of token ids (or an array of such arrays), got ${typeName(value)}`,
    );
  }
  if (value.length === 0) {
    throw new FormatError(
      path,
      "top level",
      "The array is empty: it contains no tokens to evaluate",
    );
  }

  // an array of arrays is a list of documents, each evaluated in its own windows
  if (Array.isArray(value[0])) {
    return value.map((doc, d) => {
      if (!Array.isArray(doc)) {
        throw new FormatError(
          path,
          `[${d}]`,
          `Expected an array of token ids like element [0], got ${typeName(doc)}`,
        );
      }
      if (doc.length === 0) {
        throw new FormatError(
          path,
          `[${d}]`,
          "The document is empty: remove it or add its token ids",
        );
      }
      return checkIds(path, doc, vocabSize, `[${d}]`);
    });
  }
  return [checkIds(path, value, vocabSize, "")];
}

function checkIds(path: string, values: unknown[], vocabSize: number, prefix: string): Int32Array {
  const ids = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    const field = `${prefix}[${i}]`;
    if (typeof v !== "number" || !Number.isInteger(v)) {
      throw new FormatError(path, field, `Expected an integer token id, got ${JSON.stringify(v)}`);
    }
    if (v < 0 || v >= vocabSize) throw outOfVocabulary(path, field, v, vocabSize);
    ids[i] = v;
  }
  return ids;
}

function encodeText(path: string, bytes: Uint8Array, options: TokenFileOptions): Int32Array {
  const tokenizer = options.tokenizer;
  if (!tokenizer) {
    throw new UsageError(
      `${path}: this is a text file, but the model has no tokenizer: pass token ids instead, as a .json array ` +
        "or a raw little-endian uint32 .bin/.u32 file",
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new FormatError(
      path,
      "",
      "Text files must be UTF-8: this file is not (use .json, .bin or .u32 for token ids)",
    );
  }
  if (text.trim() === "") {
    throw new FormatError(path, "", "File contains only whitespace: it has no text to evaluate");
  }

  return encodeChecked(path, text, tokenizer, options.vocabSize);
}

/** Encodes text with BOS when the tokenizer has one, checking every id against the vocabulary. */
function encodeChecked(
  path: string,
  text: string,
  tokenizer: Tokenizer,
  vocabSize: number,
): Int32Array {
  const ids = tokenizer.encode(text, { addBos: tokenizer.bosId !== undefined });
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    // a tokenizer larger than the model's embedding table is a mismatched checkpoint
    if (ids[i] < 0 || ids[i] >= vocabSize) {
      throw outOfVocabulary(path, `token ${i} after encoding`, ids[i], vocabSize);
    }
    out[i] = ids[i];
  }
  return out;
}

/**
 * Keeps the first `max` tokens of token documents, in order, cutting the last one kept short.
 *
 * @example
 * ```ts
 * import { capDocuments } from "./token_files.ts";
 * const kept = capDocuments([new Int32Array([1, 2, 3]), new Int32Array([4, 5])], 4);
 * if (kept.length !== 2 || kept[1].length !== 1) throw new Error("wrong cap");
 * ```
 * @param docs Token documents.
 * @param max Largest number of tokens to keep.
 * @returns Views of the kept documents (no copies).
 */
export function capDocuments(docs: readonly Int32Array[], max: number): Int32Array[] {
  const kept: Int32Array[] = [];
  let left = max;
  for (const doc of docs) {
    if (left <= 0) break;
    const head = doc.length > left ? doc.subarray(0, left) : doc;
    kept.push(head);
    left -= head.length;
  }
  return kept;
}

/** Options of {@linkcode readCorpusTokens}. */
export interface CorpusTokenOptions extends TokenFileOptions {
  /** "train" for calibration, "held-out" for evaluation. */
  part: "train" | "held-out";
  /** Sample about this many tokens from many documents; default every document whole. */
  tokens?: number;
  /** Seed of the sample's document order (default 1). */
  seed?: number;
}

/**
 * Encodes a part of the public-domain npm corpus (Moby Dick and the State of the Union
 * addresses, split as in src/data/corpus.ts) with the model's tokenizer. Without `tokens`
 * each document becomes one token document. With `tokens` the part is sampled in chunks
 * of many documents into a single token document.
 *
 * @example Held-out text for perplexity
 * ```ts ignore
 * const model = await loadModel("models/reference");
 * const docs = await readCorpusTokens({
 *   part: "held-out",
 *   vocabSize: model.config.vocabSize,
 *   tokenizer: model.tokenizer,
 * });
 * ```
 * @param options Part, size, seed, vocabulary and tokenizer.
 * @returns Token documents, each starting with BOS when the tokenizer has one.
 * @throws {UsageError} When the model has no tokenizer.
 */
export async function readCorpusTokens(options: CorpusTokenOptions): Promise<Int32Array[]> {
  const tokenizer = options.tokenizer;
  if (!tokenizer) {
    throw new UsageError(
      `--data ${CORPUS_DATA} is English text, but the model has no tokenizer: pass token ids instead, as a .json array or a .bin/.u32 file`,
    );
  }
  const split = splitHeldOut(await loadNpmCorpus());
  const docs = options.part === "train" ? split.train : split.heldOut;
  const label = `${CORPUS_DATA} (${options.part})`;
  if (options.tokens === undefined) {
    return docs.map((d) => encodeChecked(`${label} ${d.id}`, d.text, tokenizer, options.vocabSize));
  }
  const chars = options.tokens * CORPUS_CHARS_PER_TOKEN;
  const text = sampleCorpusText(docs, { seed: options.seed ?? 1, chars });
  return [encodeChecked(label, text, tokenizer, options.vocabSize)];
}

function outOfVocabulary(path: string, field: string, id: number, vocabSize: number): FormatError {
  return new FormatError(
    path,
    field,
    `Token id ${id} is outside the model's vocabulary [0, ${vocabSize}): the ids were made for another model or tokenizer`,
  );
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}
