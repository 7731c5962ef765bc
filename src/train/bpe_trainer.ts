/**
 * Byte-level BPE tokenizer trainer that writes a Hugging Face `tokenizer.json` (GPT-2
 * style: ByteLevel pre-tokenizer and decoder, no normalizer, no unknown token).
 *
 * Vocabulary layout: the special tokens first (ids 0..s-1, `<|endoftext|>` by default),
 * then the 256 byte symbols in byte order (id s + byte), then one token per merge.
 *
 * Training counts the words of the pre-tokenizer (the same `ByteLevelPreTokenizer` that
 * `@huggingface/tokenizers` runs at encode time, so training and use split text alike),
 * then repeatedly merges the most frequent adjacent pair. Ties go to the pair whose left
 * token, then right token, sorts first as a JavaScript string, so the result depends only
 * on the text. Pair counts are updated incrementally, and a lazy max-heap finds the best
 * pair, so each merge costs time proportional to the words that contain it.
 *
 * @module
 */
import { ByteLevelPreTokenizer } from "@huggingface/tokenizers";
import { UsageError } from "../errors.ts";
import { Progress } from "../util/progress.ts";

/** The default special token: document separator, BOS and EOS at once (GPT-2 style). */
export const END_OF_TEXT = "<|endoftext|>";

/** Options of {@linkcode trainBpe}. */
export interface BpeTrainOptions {
  /** Total vocabulary size: special tokens + 256 bytes + merges. */
  vocabSize: number;
  /** Special tokens, given ids 0.. in order. Default [`<|endoftext|>`]. */
  specialTokens?: readonly string[];
  /** Pairs seen fewer times than this are never merged. Default 2. */
  minFrequency?: number;
  /** Print no progress. Default false. */
  quiet?: boolean;
}

/** A trained byte-level BPE vocabulary. */
export interface TrainedBpe {
  /** Token strings by id (byte-level alphabet, specials first). */
  vocab: string[];
  /** Merges in rank order, as [left, right] token strings. */
  merges: [string, string][];
  /** The special tokens (ids 0..n-1). */
  specialTokens: string[];
}

/** Maps each byte to the printable character GPT-2's byte-level alphabet uses for it. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const chars: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    chars[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++);
  }
  return chars;
})();

/**
 * Trains a byte-level BPE vocabulary of exactly `options.vocabSize` tokens.
 *
 * @example Train on a tiny text
 * ```ts
 * import { trainBpe } from "./bpe_trainer.ts";
 * const bpe = trainBpe(["the cat the hat the bat"], { vocabSize: 260, quiet: true });
 * if (bpe.vocab.length !== 260 || bpe.merges[0].join("") !== "at") throw new Error("unexpected");
 * ```
 * @param texts Training texts (documents); words never span two texts.
 * @param options Vocabulary size, special tokens and minimum pair frequency.
 * @returns Vocabulary and merges.
 * @throws {UsageError} When the size is below specials + 256, or the text has too few
 *   distinct pairs to reach it.
 */
export function trainBpe(texts: Iterable<string>, options: BpeTrainOptions): TrainedBpe {
  const specialTokens = [...(options.specialTokens ?? [END_OF_TEXT])];
  const minFrequency = options.minFrequency ?? 2;
  const base = specialTokens.length + 256;
  if (!Number.isSafeInteger(options.vocabSize) || options.vocabSize < base) {
    throw new UsageError(
      `Vocabulary size ${options.vocabSize}: expected an integer of at least ${base} (special tokens + 256 bytes)`,
    );
  }
  const vocab = [...specialTokens, ...BYTE_TO_CHAR];
  const idOf = new Map<string, number>(vocab.map((t, i) => [t, i]));
  const { words, counts } = countWords(texts, specialTokens.length);
  const state = new PairState(words, counts, vocab);
  const merges: [string, string][] = [];
  const progress = new Progress("train tokenizer", options.vocabSize - base, {
    quiet: options.quiet,
    unit: "merges",
    intervalSeconds: 10,
  });

  while (vocab.length < options.vocabSize) {
    const best = state.popBest();
    if (!best || best.count < minFrequency) {
      throw new UsageError(
        `Vocabulary size ${options.vocabSize} is out of reach: the text yields only ${vocab.length} tokens with pairs seen at least ${minFrequency} times; lower --vocab-size or add text`,
      );
    }
    const left = vocab[best.a], right = vocab[best.b];
    const merged = left + right;
    // The same string can arise from two different splits; it keeps its first id.
    let id = idOf.get(merged);
    if (id === undefined) {
      id = vocab.length;
      vocab.push(merged);
      idOf.set(merged, id);
      progress.advance(1);
    }
    merges.push([left, right]);
    state.merge(best.a, best.b, id);
  }
  progress.finish();
  return { vocab, merges, specialTokens };
}

/**
 * Builds the tokenizer.json object of a trained vocabulary, loadable by
 * `@huggingface/tokenizers` (the tests load it with version 0.2.0).
 *
 * NOTE: merges are written as [left, right] pairs. Older releases of the Rust `tokenizers`
 * library expect "left right" strings instead. No Rust or Python loader was tried here.
 *
 * @param bpe Trained vocabulary.
 * @returns A JSON-serialisable tokenizer description.
 */
export function bpeTokenizerJson(bpe: TrainedBpe): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  bpe.vocab.forEach((token, id) => vocab[token] = id);
  const byteLevel = {
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: bpe.specialTokens.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: bpe.merges,
    },
  };
}

/** Counts the pre-tokenized words of all texts; returns each distinct word as byte-symbol ids. */
function countWords(
  texts: Iterable<string>,
  firstByteId: number,
): { words: Int32Array[]; counts: number[] } {
  const pre = new ByteLevelPreTokenizer({
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  });
  const freq = new Map<string, number>();
  for (const text of texts) {
    for (const word of pre.pre_tokenize_text(text, undefined)) {
      freq.set(word, (freq.get(word) ?? 0) + 1);
    }
  }
  const charToId = new Map<string, number>(BYTE_TO_CHAR.map((c, b) => [c, firstByteId + b]));
  // Sorted so that the word order, and with it every tie, does not depend on text order.
  const keys = [...freq.keys()].sort();
  const words = keys.map((w) => Int32Array.from(w, (ch) => charToId.get(ch)!));
  return { words, counts: keys.map((w) => freq.get(w)!) };
}

/** Heap entry: a pair and its count when pushed (stale entries are skipped on pop). */
interface PairEntry {
  count: number;
  a: number;
  b: number;
}

/** Pair key: ids below 2^21, so a * 2^21 + b is an exact float. */
const pairKey = (a: number, b: number): number => a * 2097152 + b;

/** Pair counts over the distinct words, the words holding each pair, and a lazy max-heap. */
class PairState {
  #words: Int32Array[];
  #wordCounts: number[];
  #vocab: string[];
  #counts = new Map<number, number>();
  #where = new Map<number, number[]>();
  #heap: PairEntry[] = [];
  #stamp: Int32Array;
  #mergeNo = 0;

  constructor(words: Int32Array[], wordCounts: number[], vocab: string[]) {
    this.#words = words;
    this.#wordCounts = wordCounts;
    this.#vocab = vocab;
    this.#stamp = new Int32Array(words.length).fill(-1);
    for (let w = 0; w < words.length; w++) this.#addPairs(w, null);
    for (const [key, count] of this.#counts) {
      this.#push({ count, a: Math.floor(key / 2097152), b: key % 2097152 });
    }
  }

  /** Pops the most frequent pair whose count is current, or null when none is left. */
  popBest(): PairEntry | null {
    while (this.#heap.length > 0) {
      const top = this.#pop();
      const current = this.#counts.get(pairKey(top.a, top.b)) ?? 0;
      if (current === top.count) return top;
      // Counts only fall without a push, so a stale entry is re-queued at its lower count.
      if (current > 0) this.#push({ count: current, a: top.a, b: top.b });
    }
    return null;
  }

  /** Replaces every (a, b) in the words that hold it by `id`, updating the pair counts. */
  merge(a: number, b: number, id: number): void {
    const key = pairKey(a, b);
    const list = this.#where.get(key) ?? [];
    this.#where.delete(key);
    const mergeNo = this.#mergeNo++;
    const before = new Map<number, number>();
    for (const w of list) {
      if (this.#stamp[w] === mergeNo) continue;
      this.#stamp[w] = mergeNo;
      const word = this.#words[w];
      if (!containsPair(word, a, b)) continue;
      this.#removePairs(w, before);
      this.#words[w] = mergePair(word, a, b, id);
      this.#addPairs(w, before);
    }
    for (const [k, old] of before) {
      const now = this.#counts.get(k) ?? 0;
      if (now > old) this.#push({ count: now, a: Math.floor(k / 2097152), b: k % 2097152 });
    }
  }

  #addPairs(w: number, before: Map<number, number> | null): void {
    const word = this.#words[w], n = this.#wordCounts[w];
    for (let i = 0; i + 1 < word.length; i++) {
      const k = pairKey(word[i], word[i + 1]);
      const old = this.#counts.get(k) ?? 0;
      if (before && !before.has(k)) before.set(k, old);
      this.#counts.set(k, old + n);
      let list = this.#where.get(k);
      if (!list) this.#where.set(k, list = []);
      list.push(w);
    }
  }

  #removePairs(w: number, before: Map<number, number>): void {
    const word = this.#words[w], n = this.#wordCounts[w];
    for (let i = 0; i + 1 < word.length; i++) {
      const k = pairKey(word[i], word[i + 1]);
      const old = this.#counts.get(k) ?? 0;
      if (!before.has(k)) before.set(k, old);
      if (old - n > 0) this.#counts.set(k, old - n);
      else this.#counts.delete(k);
    }
  }

  /** True when x ranks above y: higher count, then smaller left string, then smaller right. */
  #above(x: PairEntry, y: PairEntry): boolean {
    if (x.count !== y.count) return x.count > y.count;
    const v = this.#vocab;
    if (x.a !== y.a) return v[x.a] < v[y.a];
    return v[x.b] < v[y.b];
  }

  #push(e: PairEntry): void {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#above(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  #pop(): PairEntry {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let best = i;
        if (l < h.length && this.#above(h[l], h[best])) best = l;
        if (r < h.length && this.#above(h[r], h[best])) best = r;
        if (best === i) break;
        [h[i], h[best]] = [h[best], h[i]];
        i = best;
      }
    }
    return top;
  }
}

function containsPair(word: Int32Array, a: number, b: number): boolean {
  for (let i = 0; i + 1 < word.length; i++) if (word[i] === a && word[i + 1] === b) return true;
  return false;
}

/** Replaces non-overlapping (a, b) pairs left to right by `id`. */
function mergePair(word: Int32Array, a: number, b: number, id: number): Int32Array {
  const out: number[] = [];
  for (let i = 0; i < word.length; i++) {
    if (i + 1 < word.length && word[i] === a && word[i + 1] === b) {
      out.push(id);
      i++;
    } else {
      out.push(word[i]);
    }
  }
  return Int32Array.from(out);
}
