/**
 * Calibration and evaluation tokens of the pipeline: streams sampled from the original
 * model (for models without a tokenizer or text data) stored as JSON windows, data files
 * read and capped, and the check that the two sets never overlap.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import { capDocuments, readTokenFile } from "../data/token_files.ts";
import { sampleTokenStream } from "../data/sample_stream.ts";
import { Progress } from "../util/progress.ts";
import { writeTextFileAtomic } from "../util/atomic_write.ts";
import type { PipelineResources } from "./resources.ts";
import { loadNpmCorpus, sampleCorpusText, splitHeldOut } from "../data/corpus.ts";

/** Options of {@linkcode sampleWindowsFile}. */
export interface SampleWindowsOptions {
  /** Tokens to sample; rounded down to whole windows. */
  tokens: number;
  /** Generator seed. */
  seed: number;
  /** Output path (.json, an array of windows). */
  out: string;
  /** Progress label. */
  label: string;
  /** No progress on stderr. */
  quiet: boolean;
}

/**
 * Samples whole windows of `resources.seqLen` tokens from the original model, each
 * starting with BOS, and writes them as a JSON array of id arrays.
 *
 * @param resources Model, engine and window length.
 * @param options Size, seed and output file.
 * @returns Windows and tokens written.
 * @throws {UsageError} When `tokens` is less than one window.
 */
export async function sampleWindowsFile(
  resources: PipelineResources,
  options: SampleWindowsOptions,
): Promise<{ windows: number; tokens: number; seed: number }> {
  const seqLen = resources.seqLen;
  const windows = Math.floor(options.tokens / seqLen);
  if (windows < 1) {
    throw new UsageError(
      `${options.label}: ${options.tokens} tokens is less than one window of ${seqLen}: raise the token count or lower --seq-len`,
    );
  }
  const lm = await resources.original();
  const total = windows * seqLen;
  const progress = new Progress(options.label, total, { quiet: options.quiet, unit: "tokens" });
  const stream = await sampleTokenStream(lm, {
    tokens: total,
    windowLength: seqLen,
    seed: options.seed,
    progress,
  });
  progress.finish();
  const lines: string[] = [];
  for (let w = 0; w < windows; w++) {
    lines.push(`[${stream.subarray(w * seqLen, (w + 1) * seqLen).join(",")}]`);
  }
  await writeTextFileAtomic(options.out, `[\n${lines.join(",\n")}\n]\n`);
  return { windows, tokens: total, seed: options.seed };
}

/** Options of {@linkcode corpusTextFile}. */
export interface CorpusTextOptions {
  /** Part of the npm corpus: "train" for calibration, "held-out" for evaluation. */
  part: "train" | "held-out";
  /** Seed of the document order. */
  seed: number;
  /** Characters to write; fewer when the part runs out. */
  chars: number;
  /** Output text file. */
  out: string;
}

/**
 * Writes a sample of the public-domain npm corpus (Moby Dick and the State of the Union
 * addresses, split as for training in src/data/corpus.ts) to a text file. The sample takes
 * chunks of many documents in a seeded order. A model trained on the training part is
 * then evaluated on text it never saw.
 *
 * @param options Part, seed, size and output file.
 * @returns The part, the characters written and the number of documents in the part.
 */
export async function corpusTextFile(
  options: CorpusTextOptions,
): Promise<{ part: string; chars: number; partDocuments: number }> {
  const split = splitHeldOut(await loadNpmCorpus());
  const docs = options.part === "train" ? split.train : split.heldOut;
  const text = sampleCorpusText(docs, { seed: options.seed, chars: options.chars });
  await writeTextFileAtomic(options.out, text + "\n");
  return { part: options.part, chars: text.length, partDocuments: docs.length };
}

/**
 * Reads token documents from data files and keeps at most `maxTokens` of them in order
 * (the last kept document is cut short).
 *
 * @param files Data files (.json, .bin/.u32 or text).
 * @param resources Vocabulary and tokenizer come from the original model.
 * @param maxTokens Token cap, or null for all.
 */
export async function readDocuments(
  files: string[],
  resources: PipelineResources,
  maxTokens: number | null,
): Promise<Int32Array[]> {
  const { config, tokenizer } = resources.model;
  const docs: Int32Array[] = [];
  for (const file of files) {
    docs.push(...await readTokenFile(file, { vocabSize: config.vocabSize, tokenizer }));
  }
  return capDocuments(docs, maxTokens ?? Infinity);
}

/**
 * Throws when an evaluation window also occurs among the calibration windows, so results
 * are never measured on calibration data.
 *
 * @example
 * ```ts
 * import { checkDisjointWindows } from "./token_streams.ts";
 * checkDisjointWindows([new Int32Array([1, 2])], [new Int32Array([1, 3])]);
 * ```
 * @param calibration Calibration windows.
 * @param evaluation Evaluation windows.
 * @throws {UsageError} Naming the first shared window.
 */
export function checkDisjointWindows(calibration: Int32Array[], evaluation: Int32Array[]): void {
  const seen = new Set(calibration.map((w) => w.join(",")));
  const shared = evaluation.findIndex((w) => seen.has(w.join(",")));
  if (shared >= 0) {
    throw new UsageError(
      `Evaluation window ${shared} also occurs in the calibration data: use other evaluation data or another --seed`,
    );
  }
}
