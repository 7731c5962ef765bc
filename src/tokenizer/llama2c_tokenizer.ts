/**
 * llama2.c `tokenizer.bin` reader. Layout (little-endian): i32 max_token_length, then for
 * each token: f32 score, i32 byte length, UTF-8 bytes. The file does not store the
 * vocabulary size, so it is the number of entries up to the end of the file. Callers that
 * know the model's vocabulary size pass it to have the count checked.
 *
 * Encoding follows run.c: a leading space, score-merge BPE over characters, byte fallback
 * to `<0xXX>` pieces. Pieces store spaces as " " (llama2.c's export replaces "\u2581").
 * BOS is id 1 and EOS id 2, as run.c hard-codes them.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { ScoreBpeTokenizer } from "./score_bpe.ts";

/** Maximum piece length in bytes (llama2.c vocabularies stay under 64). */
const MAX_PIECE_BYTES = 1 << 16;
/** Most tokens accepted. */
const MAX_TOKENS = 1 << 22;

/** A parsed tokenizer.bin. */
export interface Llama2cVocab {
  /** max_token_length from the header. */
  maxTokenLength: number;
  /** Piece text of each id. */
  pieces: string[];
  /** Merge score of each id. */
  scores: Float32Array;
}

/**
 * Parses tokenizer.bin bytes.
 *
 * @param bytes File contents.
 * @param path File named in errors.
 * @param vocabSize Expected number of tokens, when known.
 * @throws {FormatError} On a truncated entry, an invalid length or a count mismatch.
 */
export function parseLlama2cTokenizer(
  bytes: Uint8Array,
  path: string,
  vocabSize?: number,
): Llama2cVocab {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) {
    throw new FormatError(
      path,
      "max_token_length",
      `File is ${bytes.length} bytes, too short for the header`,
    );
  }
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0 || maxTokenLength > MAX_PIECE_BYTES) {
    throw new FormatError(
      path,
      "max_token_length",
      `Invalid value ${maxTokenLength}: expected 1 to ${MAX_PIECE_BYTES}; is this a llama2.c tokenizer.bin?`,
    );
  }
  const pieces: string[] = [];
  const scores: number[] = [];
  const decoder = new TextDecoder();
  let pos = 4;
  while (pos < bytes.length && pieces.length < MAX_TOKENS) {
    const id = pieces.length;
    if (pos + 8 > bytes.length) {
      throw new FormatError(
        path,
        `token ${id}`,
        "Unexpected end of file inside the score and length: the file is truncated",
      );
    }
    const score = view.getFloat32(pos, true);
    const length = view.getInt32(pos + 4, true);
    pos += 8;
    if (length < 0 || length > maxTokenLength) {
      throw new FormatError(
        path,
        `token ${id}`,
        `Invalid length ${length}: expected 0 to max_token_length ${maxTokenLength}`,
      );
    }
    if (pos + length > bytes.length) {
      throw new FormatError(
        path,
        `token ${id}`,
        "Unexpected end of file inside the piece: the file is truncated",
      );
    }
    if (!Number.isFinite(score)) throw new FormatError(path, `token ${id}`, `Score is ${score}`);
    pieces.push(decoder.decode(bytes.subarray(pos, pos + length)));
    scores.push(score);
    pos += length;
  }
  if (pos < bytes.length) throw new FormatError(path, "", `More than ${MAX_TOKENS} tokens`);
  if (vocabSize !== undefined && pieces.length !== vocabSize) {
    throw new FormatError(
      path,
      "vocab_size",
      `File has ${pieces.length} tokens but the model's vocabulary has ${vocabSize}: use the tokenizer trained with this model`,
    );
  }
  return { maxTokenLength, pieces, scores: new Float32Array(scores) };
}

/**
 * Loads a llama2.c tokenizer.bin as a tokenizer.
 *
 * @example
 * ```ts ignore
 * const tok = await loadLlama2cTokenizer("tokenizer.bin", { vocabSize: 32000 });
 * console.log(tok.encode("Once upon a time", { addBos: true }));
 * ```
 * @param path File path.
 * @param options `vocabSize` checks the token count against the model's.
 * @throws {FormatError} When the file is malformed.
 */
export async function loadLlama2cTokenizer(
  path: string,
  options: { vocabSize?: number } = {},
): Promise<ScoreBpeTokenizer> {
  const vocab = parseLlama2cTokenizer(await Deno.readFile(path), path, options.vocabSize);
  return llama2cTokenizer(vocab);
}

/**
 * Builds run.c's tokenizer over a parsed vocabulary (BOS 1, EOS 2, space as " ").
 *
 * @param vocab Parsed tokenizer.bin.
 */
export function llama2cTokenizer(vocab: Llama2cVocab): ScoreBpeTokenizer {
  return new ScoreBpeTokenizer({
    pieces: vocab.pieces,
    scores: vocab.scores,
    spaceSymbol: " ",
    bosId: 1,
    eosIds: [2],
  });
}

/**
 * Serializes a vocabulary in tokenizer.bin layout (tests and conversions).
 *
 * @param pieces Piece text of each id.
 * @param scores Merge score of each id.
 * @returns File bytes.
 */
export function encodeLlama2cTokenizer(
  pieces: readonly string[],
  scores: ArrayLike<number>,
): Uint8Array {
  const encoded = pieces.map((p) => new TextEncoder().encode(p));
  const maxLength = Math.max(1, ...encoded.map((e) => e.length));
  const out = new Uint8Array(4 + encoded.reduce((sum, e) => sum + 8 + e.length, 0));
  const view = new DataView(out.buffer);
  view.setInt32(0, maxLength, true);
  let pos = 4;
  encoded.forEach((e, i) => {
    view.setFloat32(pos, scores[i], true);
    view.setInt32(pos + 4, e.length, true);
    out.set(e, pos + 8);
    pos += 8 + e.length;
  });
  return out;
}
