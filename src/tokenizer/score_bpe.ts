/**
 * SentencePiece-style BPE driven by piece scores, as llama2.c's `run.c` and llama.cpp's
 * SPM tokenizer encode. The text, with a leading space prepended, is split into Unicode
 * characters. Then the adjacent pair whose concatenation is the vocabulary piece with the
 * highest score is merged (leftmost first on ties), until no pair is in the vocabulary.
 * Symbols left outside the vocabulary fall back to their UTF-8 bytes as `<0xXX>` pieces.
 *
 * @module
 */
import type { Tokenizer } from "./tokenizer.ts";

/** Options of {@linkcode ScoreBpeTokenizer}. */
export interface ScoreBpeOptions {
  /** Piece text of each id. */
  pieces: readonly string[];
  /** Merge score of each id (higher merges first). */
  scores: ArrayLike<number>;
  /** Character that stands for a space inside pieces: " " (llama2.c) or "\u2581" (SentencePiece). */
  spaceSymbol: string;
  /** BOS id, or undefined. */
  bosId?: number;
  /** EOS ids. */
  eosIds?: readonly number[];
  /** Ids never produced by encoding and dropped by decoding (control tokens). */
  controlIds?: Iterable<number>;
  /** Ids whose piece text is matched verbatim in the input and encoded as that one id. */
  specialIds?: Iterable<number>;
  /** Id for a byte without a `<0xXX>` piece. Default 0. */
  unkId?: number;
  /** Prepend a space to the text, as SentencePiece's add_dummy_prefix does. Default true. */
  addSpacePrefix?: boolean;
}

/** Candidate merge of symbol `left` with its right neighbour. */
interface Candidate {
  left: number;
  right: number;
  score: number;
  /** Combined text length, which detects candidates outdated by an earlier merge. */
  length: number;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * Score-merge BPE tokenizer over a fixed vocabulary of pieces.
 *
 * @example Merge by score
 * ```ts
 * import { ScoreBpeTokenizer } from "./score_bpe.ts";
 * const tok = new ScoreBpeTokenizer({ pieces: ["<unk>", " ", "a", "b", " a", "ab", " ab"],
 *   scores: [0, 0, 0, 0, 1, 2, 3], spaceSymbol: " " });
 * if (tok.encode("ab").join() !== "6") throw new Error("expected the piece ' ab'");
 * ```
 */
export class ScoreBpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: readonly number[];
  #pieces: readonly string[];
  #scores: ArrayLike<number>;
  #ids = new Map<string, number>();
  #byteIds = new Int32Array(256).fill(-1);
  #byteOfId = new Map<number, number>();
  #hidden: Set<number>;
  /** Matches any special piece, longest first; null when there are none. */
  #specialPattern: RegExp | null;
  #specialIds = new Map<string, number>();
  #space: string;
  #unk: number;
  #prefix: boolean;

  /**
   * Builds the tokenizer; later duplicates of a piece are ignored, as in run.c's sorted lookup.
   *
   * @param options Vocabulary, scores and special ids.
   */
  constructor(options: ScoreBpeOptions) {
    this.#pieces = options.pieces;
    this.#scores = options.scores;
    this.vocabSize = options.pieces.length;
    this.bosId = options.bosId;
    this.eosIds = options.eosIds ?? [];
    this.#space = options.spaceSymbol;
    this.#unk = options.unkId ?? 0;
    this.#prefix = options.addSpacePrefix ?? true;
    this.#hidden = new Set(options.controlIds ?? []);
    if (this.bosId !== undefined) this.#hidden.add(this.bosId);
    for (const id of this.eosIds) this.#hidden.add(id);
    options.pieces.forEach((piece, id) => {
      const byte = BYTE_PIECE.exec(piece);
      if (byte) {
        this.#byteIds[parseInt(byte[1], 16)] = id;
        this.#byteOfId.set(id, parseInt(byte[1], 16));
      } else if (!this.#hidden.has(id) && !this.#ids.has(piece)) {
        this.#ids.set(piece, id);
      }
    });
    for (const id of options.specialIds ?? []) {
      const piece = options.pieces[id];
      if (piece) this.#specialIds.set(piece, id);
    }
    const specials = [...this.#specialIds.keys()].sort((a, b) => b.length - a.length);
    this.#specialPattern = specials.length
      ? new RegExp(specials.map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "g")
      : null;
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const out: number[] = options.addBos && this.bosId !== undefined ? [this.bosId] : [];
    if (!this.#specialPattern) {
      this.#encodeText(text, this.#prefix, out);
      return out;
    }
    // Special pieces become their ids. As in llama.cpp, the space prefix goes on the
    // text at the start and on text right after a special piece.
    let start = 0, afterSpecial = true;
    for (const match of text.matchAll(this.#specialPattern)) {
      if (match.index > start) {
        this.#encodeText(text.slice(start, match.index), this.#prefix && afterSpecial, out);
      }
      out.push(this.#specialIds.get(match[0])!);
      start = match.index + match[0].length;
      afterSpecial = true;
    }
    if (start < text.length) this.#encodeText(text.slice(start), this.#prefix && afterSpecial, out);
    return out;
  }

  /** Encodes text without special pieces, appending the ids to `out`. */
  #encodeText(text: string, addPrefix: boolean, out: number[]): void {
    if (text.length === 0) return;
    const spaced = (addPrefix ? " " + text : text).replaceAll(" ", this.#space);
    const symbols = this.#merge(Array.from(spaced));
    const encoder = new TextEncoder();
    for (const symbol of symbols) {
      const id = this.#ids.get(symbol);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      for (const byte of encoder.encode(symbol)) {
        out.push(this.#byteIds[byte] >= 0 ? this.#byteIds[byte] : this.#unk);
      }
    }
  }

  decode(ids: readonly number[]): string {
    const bytes: number[] = [];
    const encoder = new TextEncoder();
    for (const id of ids) {
      if (this.#hidden.has(id)) continue;
      const byte = this.#byteOfId.get(id);
      if (byte !== undefined) {
        bytes.push(byte);
        continue;
      }
      const piece = this.#pieces[id];
      if (piece === undefined) {
        throw new RangeError(`Token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
      for (const b of encoder.encode(piece.replaceAll(this.#space, " "))) bytes.push(b);
    }
    const text = new TextDecoder().decode(new Uint8Array(bytes));
    // SentencePiece drops the space that encoding prepended.
    return this.#prefix && text.startsWith(" ") ? text.slice(1) : text;
  }

  /** Merges adjacent symbols by score with a heap: O(n log n) in the text length. */
  #merge(chars: string[]): string[] {
    const text = chars.slice();
    const next = chars.map((_, i) => i + 1);
    const prev = chars.map((_, i) => i - 1);
    next[chars.length - 1] = -1;
    const heap: Candidate[] = [];
    const consider = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const id = this.#ids.get(text[left] + text[right]);
      if (id === undefined) return;
      heapPush(heap, {
        left,
        right,
        score: this.#scores[id],
        length: text[left].length + text[right].length,
      });
    };
    for (let i = 0; i + 1 < chars.length; i++) consider(i, i + 1);
    while (heap.length > 0) {
      const c = heapPop(heap);
      // Skip candidates whose symbols changed since they were queued.
      if (next[c.left] !== c.right || text[c.left].length + text[c.right].length !== c.length) {
        continue;
      }
      text[c.left] += text[c.right];
      text[c.right] = "";
      next[c.left] = next[c.right];
      if (next[c.right] >= 0) prev[next[c.right]] = c.left;
      next[c.right] = -2;
      consider(prev[c.left], c.left);
      consider(c.left, next[c.left]);
    }
    const out: string[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(text[i]);
    return out;
  }
}

/** True when a should pop before b: higher score, then leftmost. */
function before(a: Candidate, b: Candidate): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

function heapPush(heap: Candidate[], c: Candidate): void {
  heap.push(c);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (!before(heap[i], heap[parent])) break;
    [heap[i], heap[parent]] = [heap[parent], heap[i]];
    i = parent;
  }
}

function heapPop(heap: Candidate[]): Candidate {
  const top = heap[0];
  const last = heap.pop()!;
  if (heap.length > 0) {
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let best = i;
      if (l < heap.length && before(heap[l], heap[best])) best = l;
      if (r < heap.length && before(heap[r], heap[best])) best = r;
      if (best === i) break;
      [heap[i], heap[best]] = [heap[best], heap[i]];
      i = best;
    }
  }
  return top;
}
