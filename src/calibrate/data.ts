/**
 * Calibration sequences: token windows of `seqLen` cut from data files (text through the
 * model's tokenizer, chat JSONL through its chat template, or token-id files), or sampled
 * from the model itself with a seed.
 *
 * File data is concatenated in the order given (text files each start with BOS when the
 * tokenizer has one) and cut into consecutive non-overlapping windows; a last partial
 * window is dropped. Sampled data comes in windows that each start with BOS at position 0.
 *
 * @module
 */
import { basename } from "node:path";
import { UsageError } from "../errors.ts";
import type { LoadedModel } from "../model/model.ts";
import type { CausalLM } from "../model/causal_lm.ts";
import { readCorpusTokens, readTokenFile } from "../data/token_files.ts";
import { CORPUS_DATA } from "../data/corpus.ts";
import { sampleTokenStream } from "../data/sample_stream.ts";
import { readChatFile } from "./chat_data.ts";
import type { Progress } from "../util/progress.ts";

/** Source of calibration tokens: files, or a stream sampled from the model. */
export interface DataSpec {
  /** Data files (text, `.json` / `.bin` / `.u32` ids, or chat JSONL with `chat`). */
  files?: string[];
  /** Treat every file as JSONL chat conversations rendered with the chat template. */
  chat?: boolean;
  /** Sample this many tokens from the model instead of reading files. */
  sampleTokens?: number;
  /** Seed of the sampled stream. */
  seed?: number;
  /** Tokens per sequence, 2..maxSeqLen. */
  seqLen: number;
  /** Number of sequences to use; default every full window. */
  sequences?: number;
}

/** Calibration sequences and how to describe them in metadata. */
export interface CalibrationData {
  /** Sequences, each seqLen token ids. */
  windows: Int32Array[];
  /** One line naming the source, for the file's metadata. */
  description: string;
  /** Seed of sampled data, or null for files. */
  seed: number | null;
}

/** Options of {@linkcode loadCalibrationData}. */
export interface LoadDataOptions {
  /** Creates the model that samples a token stream (only called for sampled data; disposed after sampling). */
  sampler?: () => Promise<CausalLM>;
  /** Progress of sampling, advanced by tokens. */
  progress?: (total: number) => Progress | undefined;
}

/**
 * Checks a data spec against the model before any work starts.
 *
 * @param model Loaded model.
 * @param spec Data spec.
 * @throws {UsageError} Naming the option and the allowed range.
 */
export function validateDataSpec(model: LoadedModel, spec: DataSpec): void {
  const ctx = model.config.maxSeqLen;
  if (!(Number.isSafeInteger(spec.seqLen) && spec.seqLen >= 2)) {
    throw new UsageError(`--seq-len must be an integer of at least 2, got ${spec.seqLen}`);
  }
  if (spec.seqLen > ctx) {
    throw new UsageError(
      `--seq-len ${spec.seqLen} is beyond the model's context of ${ctx} tokens: pass --seq-len ${ctx} or less`,
    );
  }
  const hasFiles = (spec.files?.length ?? 0) > 0;
  if (hasFiles === (spec.sampleTokens !== undefined)) {
    throw new UsageError("Pass either --data FILE... or --sample-tokens N with --seed S");
  }
  if (
    spec.sequences !== undefined && !(Number.isSafeInteger(spec.sequences) && spec.sequences >= 1)
  ) {
    throw new UsageError(`--sequences must be a positive integer, got ${spec.sequences}`);
  }
  if (spec.sampleTokens !== undefined) {
    if (!(Number.isSafeInteger(spec.sampleTokens) && spec.sampleTokens >= 1)) {
      throw new UsageError(`--sample-tokens must be a positive integer, got ${spec.sampleTokens}`);
    }
    if (!Number.isSafeInteger(spec.seed)) {
      throw new UsageError(
        "--sample-tokens needs --seed S (an integer) so the stream can be sampled again on --resume",
      );
    }
    if (spec.sampleTokens < spec.seqLen) {
      throw new UsageError(
        `--sample-tokens ${spec.sampleTokens} is shorter than one sequence of --seq-len ${spec.seqLen}: sample at least ${spec.seqLen} tokens`,
      );
    }
    if (model.config.bosId === undefined) {
      throw new UsageError(
        "--sample-tokens needs a model with a BOS token id; pass --data instead",
      );
    }
  }
  if (spec.files?.includes(CORPUS_DATA) && (spec.files.length > 1 || spec.chat)) {
    throw new UsageError(
      `--data ${CORPUS_DATA} stands for the npm corpus and cannot be mixed with files or --chat; pass ./${CORPUS_DATA} for a file of that name`,
    );
  }
  if (spec.files?.includes(CORPUS_DATA) && spec.sequences === undefined) {
    throw new UsageError(
      `--data ${CORPUS_DATA} needs --sequences K: the corpus's training part is about 11 M characters, far more than calibration needs`,
    );
  }
  if (spec.chat && !hasFiles) {
    throw new UsageError("--chat needs --data with JSONL conversation files");
  }
}

/**
 * Reads or samples the calibration sequences.
 *
 * @example Sample 4 windows of 32 tokens
 * ```ts ignore
 * const data = await loadCalibrationData(model, { sampleTokens: 128, seed: 1, seqLen: 32 },
 *   { sampler: () => ReferenceModel.create(model.config, model.weights) });
 * ```
 * @param model Loaded model (its tokenizer and chat template are used for text and chat).
 * @param spec Files or sampling, sequence length and count.
 * @param options Sampler factory and progress.
 * @throws {UsageError} When the data contains fewer tokens than one sequence, or fewer sequences than requested.
 */
export async function loadCalibrationData(
  model: LoadedModel,
  spec: DataSpec,
  options: LoadDataOptions = {},
): Promise<CalibrationData> {
  validateDataSpec(model, spec);
  const { seqLen } = spec;
  let stream: Int32Array;
  let description: string;
  if (spec.sampleTokens !== undefined) {
    if (!options.sampler) throw new UsageError("Sampled calibration data needs a sampler model");
    const lm = await options.sampler();
    // The stream is sequential in the seed, so sampling only the requested windows gives
    // the same first windows as sampling all of them.
    const total = Math.min(Math.floor(spec.sampleTokens / seqLen), spec.sequences ?? Infinity) *
      seqLen;
    stream = await sampleTokenStream(lm, {
      tokens: total,
      windowLength: seqLen,
      seed: spec.seed!,
      progress: options.progress?.(total),
    });
    description =
      `sampled from the model: ${total} tokens, seed ${spec.seed}, windows of ${seqLen} starting with BOS`;
  } else {
    const parts: Int32Array[] = [];
    for (const file of spec.files!) {
      const source = { vocabSize: model.config.vocabSize, tokenizer: model.tokenizer };
      const docs = spec.chat
        ? await readChatFile(file, model)
        : file === CORPUS_DATA
        ? await readCorpusTokens({
          ...source,
          part: "train",
          tokens: spec.sequences! * seqLen,
          seed: spec.seed ?? 1,
        })
        : await readTokenFile(file, source);
      parts.push(...docs);
    }
    stream = concat(parts);
    const kind = spec.chat ? "chat JSONL" : "files";
    description = `${kind}: ${
      spec.files!.map((f) => basename(f)).join(", ")
    } (${stream.length} tokens)`;
    if (stream.length < seqLen) {
      throw new UsageError(
        `Data contains ${stream.length} tokens, shorter than one sequence of --seq-len ${seqLen} (${
          spec.files!.join(", ")
        }): add data or lower --seq-len`,
      );
    }
  }
  const available = Math.floor(stream.length / seqLen);
  const count = spec.sequences ?? available;
  if (count > available) {
    throw new UsageError(
      `--sequences ${count} asks for more than the ${available} sequences of ${seqLen} tokens the data contains: lower --sequences or add data`,
    );
  }
  const windows: Int32Array[] = [];
  for (let i = 0; i < count; i++) windows.push(stream.slice(i * seqLen, (i + 1) * seqLen));
  return { windows, description, seed: spec.sampleTokens !== undefined ? spec.seed! : null };
}

function concat(parts: Int32Array[]): Int32Array {
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
