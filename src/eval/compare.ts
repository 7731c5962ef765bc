/**
 * One-command comparison of the quantization methods on one model: calibrate on a
 * sampled stream, quantize with every method at every target bit width, and evaluate
 * each quantized model against the full model on held-out tokens.
 *
 * Held-out means a second stream sampled from the full model with a different seed, so
 * no evaluation window was seen during calibration. Every quantized model is evaluated on
 * the same windows, with the full model as the KL reference.
 *
 * @module
 */
import { join } from "node:path";
import { UsageError } from "../errors.ts";
import type { GpuContext } from "../gpu/device.ts";
import type { CausalLM } from "../model/causal_lm.ts";
import { loadModel } from "../model/load.ts";
import type { LoadedModel } from "../model/model.ts";
import { calibrate } from "../calibrate/calibrate.ts";
import { createEngine } from "../calibrate/create_engine.ts";
import { loadCalibrationData } from "../calibrate/data.ts";
import { sampleTokenStream } from "../data/sample_stream.ts";
import { quantizeModel, type QuantizeOptions } from "../quantize/quantize_model.ts";
import { openStatistics } from "../quantize/statistics.ts";
import { type GpuUse, QUANT_METHODS, type QuantMethod } from "../quantize/types.ts";
import { Progress } from "../util/progress.ts";
import { createCausalLM, type Engine } from "./engine.ts";
import { checkContextLength, type EvalResult, evaluate } from "./evaluate.ts";
import { type ChoiceQuestion, readChoiceTasks } from "../data/choice_tasks.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { evaluateChoiceTasks } from "./zero_shot.ts";

/** Maximum default length of the evaluation window and calibration sequence, in tokens. */
export const DEFAULT_COMPARE_CTX = 2048;

/** Method settings passed to every {@linkcode quantizeModel} call. */
export type CompareQuantizeSettings = Pick<
  QuantizeOptions,
  "vectorLength" | "groupSize" | "lambda" | "seed" | "iterations" | "layers" | "codebookScope"
>;

/** Options of {@linkcode compareQuantizers}. */
export interface CompareOptions {
  /** Path of the full-precision model. */
  model: string;
  /** Methods, in table order; default every method. */
  methods?: readonly QuantMethod[];
  /** Target bits per weight; default 2, 3 and 4. */
  bits?: readonly number[];
  /** Tokens sampled for calibration (S1 stream). Default 4096. */
  calibTokens?: number;
  /** Seed of the calibration stream. Default 1. */
  calibSeed?: number;
  /** An existing statistics file to use instead of calibrating. */
  fisher?: string;
  /** Held-out tokens sampled for evaluation (S2 stream). Default 4096. */
  evalTokens?: number;
  /** Seed of the evaluation stream; must differ from `calibSeed`. Default 2. */
  evalSeed?: number;
  /**
   * Evaluation window and calibration sequence length; default the model's context, at
   * most {@linkcode DEFAULT_COMPARE_CTX}.
   */
  ctx?: number;
  /** Forward and backward engine. */
  engine: Engine;
  /** Device for the gpu engine and for k-means; null runs everything in TypeScript. */
  gpu: GpuContext | null;
  /** When quantization uses the device. Default "auto". */
  gpuUse?: GpuUse;
  /** Folder for the statistics file and the quantized models. */
  workDir: string;
  /** Keep each quantized model in `workDir` (deleted after its evaluation otherwise). */
  keepModels?: boolean;
  /** Settings shared by every quantization. */
  quantize?: CompareQuantizeSettings;
  /** Multiple-choice JSONL task files; each row then also reports zero-shot accuracy. */
  choiceTasks?: string[];
  /** No progress on stderr. */
  quiet?: boolean;
  /** Called after each finished row, for live output. */
  onRow?: (row: CompareRow) => void;
}

/** One line of the comparison: the full model, or one method at one target. */
export interface CompareRow {
  /** Method, or "full" for the unquantized reference. */
  method: QuantMethod | "full";
  /** Requested bits per weight; null for the full model. */
  targetBits: number | null;
  /** Achieved bits per weight over the quantized layers, from stored bytes; null for the full model. */
  bpw: number | null;
  /** Wall-clock seconds of quantization (writing the file included); null for the full model. */
  quantizeSeconds: number | null;
  /** Evaluation against the full model, absent when the row failed. */
  result?: EvalResult;
  /** Zero-shot accuracy averaged over the task files' tasks, with `choiceTasks`. */
  zeroShot?: ZeroShotSummary;
  /** Error message when quantizing or evaluating this row failed. */
  error?: string;
  /** The quantized model file, when it was kept. */
  path?: string;
}

/** Unweighted mean accuracy over the tasks of the task files, as fractions. */
export interface ZeroShotSummary {
  /** Mean `acc` over tasks, a fraction in [0, 1]. */
  acc: number;
  /** Mean `acc_norm` over tasks, a fraction in [0, 1]. */
  acc_norm: number;
  /** Number of tasks averaged. */
  tasks: number;
  /** Number of questions over all tasks. */
  questions: number;
}

/** Everything the comparison measured, and how. */
export interface CompareResult {
  /** Model path. */
  model: string;
  /** Rows: the full model first, then each target bit width with its methods. */
  rows: CompareRow[];
  /** Window length of the evaluation and of the calibration sequences. */
  ctx: number;
  /** Calibration data: sampled tokens and seed, or the statistics file given. */
  calibration: { tokens: number; seed: number } | { fisher: string };
  /** Held-out evaluation stream. */
  evaluation: { tokens: number; seed: number };
  /** Engine of the forward and backward passes. */
  engine: Engine;
  /** Seconds spent calibrating (0 with a given statistics file). */
  calibrateSeconds: number;
}

/**
 * Calibrates, quantizes with every method and target, and evaluates each result.
 *
 * @example
 * ```ts ignore
 * const result = await compareQuantizers({ model: "stories260K.bin", engine: "reference", gpu: null,
 *   workDir: await Deno.makeTempDir(), bits: [3] });
 * console.log(formatCompareTable(result));
 * ```
 * @param options Model, methods, targets, streams, engine and output folder.
 * @returns The full model's row, then one row per method and target. A failed row carries
 *   its error instead of a result, so one failure does not lose the other rows.
 * @throws {UsageError} On equal seeds, a bad window, or an empty method or bit list.
 */
export async function compareQuantizers(options: CompareOptions): Promise<CompareResult> {
  const methods = options.methods ?? QUANT_METHODS;
  const bitsList = options.bits ?? [2, 3, 4];
  const calibSeed = options.calibSeed ?? 1;
  const evalSeed = options.evalSeed ?? 2;
  const evalTokens = options.evalTokens ?? 4096;
  const calibTokens = options.calibTokens ?? 4096;
  checkOptions(options, methods, bitsList, calibSeed, evalSeed);

  // task files are parsed first, so a malformed line fails before any work
  const questions = options.choiceTasks
    ? (await readChoiceTasks(options.choiceTasks)).questions
    : [];
  const model = await loadModel(options.model);
  const open: { dispose(): void }[] = [];
  try {
    const ctx = options.ctx ?? Math.min(DEFAULT_COMPARE_CTX, model.config.maxSeqLen);
    checkContextLength(ctx, model.config, options.model);
    const lmOptions = {
      gpu: options.gpu ?? undefined,
      contextLength: kvLength(model, ctx, questions),
    };
    const full = await createCausalLM(model, options.engine, lmOptions);
    open.push(full);

    // statistics from the S1 stream, unless a file was given
    const started = performance.now();
    const fisher = options.fisher ??
      await calibrateModel(model, full, options, calibTokens, calibSeed, ctx);
    const calibrateSeconds = options.fisher ? 0 : (performance.now() - started) / 1000;

    // held-out S2 stream from the full model, and the full model's own row
    const sampling = new Progress("sample held-out tokens", evalTokens, {
      quiet: options.quiet,
      unit: "tokens",
    });
    const tokens = await sampleTokenStream(full, {
      tokens: evalTokens,
      windowLength: ctx,
      seed: evalSeed,
      progress: sampling,
    });
    sampling.finish();
    const rows: CompareRow[] = [];
    const addRow = (row: CompareRow) => {
      rows.push(row);
      options.onRow?.(row);
    };
    // the full model is the KL reference, so its own row has perplexity only
    const fullResult = await evaluate(full, tokens, { ctx });
    addRow({
      method: "full",
      targetBits: null,
      bpw: null,
      quantizeSeconds: null,
      result: fullResult,
      zeroShot: await zeroShot(full, model.tokenizer, questions),
    });

    const stats = await openStatistics(fisher);
    open.push({ dispose: () => stats.close() });
    for (const bits of bitsList) {
      for (const method of methods) {
        const rowOptions = { ...options, ctx, questions, kvLength: lmOptions.contextLength };
        addRow(await compareOne(model, stats, full, tokens, rowOptions, method, bits));
      }
    }
    return {
      model: options.model,
      rows,
      ctx,
      calibration: options.fisher
        ? { fisher: options.fisher }
        : { tokens: calibTokens, seed: calibSeed },
      evaluation: { tokens: evalTokens, seed: evalSeed },
      engine: options.engine,
      calibrateSeconds,
    };
  } finally {
    for (const resource of open.reverse()) resource.dispose();
    model.weights.close();
  }
}

function checkOptions(
  options: CompareOptions,
  methods: readonly QuantMethod[],
  bitsList: readonly number[],
  calibSeed: number,
  evalSeed: number,
): void {
  if (methods.length === 0) {
    throw new UsageError("No methods to compare: pass at least one in --methods");
  }
  for (const method of methods) {
    if (!QUANT_METHODS.includes(method)) {
      throw new UsageError(
        `Invalid method ${JSON.stringify(method)}: expected one of ${QUANT_METHODS.join(", ")}`,
      );
    }
  }
  if (bitsList.length === 0) throw new UsageError("No target bits: pass at least one in --bits");
  for (const bits of bitsList) {
    if (!(bits > 0 && bits <= 16)) {
      throw new UsageError(`Invalid target bits ${bits}: expected a number in (0, 16]`);
    }
  }
  if (!options.fisher && calibSeed === evalSeed) {
    throw new UsageError(
      `--calib-seed and --eval-seed are both ${calibSeed}: the evaluation tokens must be held out, so pass different seeds`,
    );
  }
}

/** Samples the S1 stream from the full model and writes `workDir/fisher.safetensors`. */
async function calibrateModel(
  model: LoadedModel,
  full: CausalLM,
  options: CompareOptions,
  tokens: number,
  seed: number,
  seqLen: number,
): Promise<string> {
  const out = join(options.workDir, "fisher.safetensors");
  const data = await loadCalibrationData(model, { sampleTokens: tokens, seed, seqLen }, {
    sampler: () => Promise.resolve(full),
    progress: (total) =>
      new Progress("sample calibration tokens", total, { quiet: options.quiet, unit: "tokens" }),
  });
  const engine = await createEngine(model, options.engine, {
    gpu: options.gpu ?? undefined,
    fullG: false,
  });
  try {
    await calibrate({ model, data, engine, out, quiet: options.quiet });
  } finally {
    engine.dispose();
  }
  return out;
}

/** Quantizes with one method at one target and evaluates the result; errors become the row's. */
async function compareOne(
  model: LoadedModel,
  stats: Awaited<ReturnType<typeof openStatistics>>,
  full: CausalLM,
  tokens: Int32Array,
  options: CompareOptions & { ctx: number; questions: ChoiceQuestion[]; kvLength: number },
  method: QuantMethod,
  bits: number,
): Promise<CompareRow> {
  const path = join(options.workDir, `${method}-${bits}bpw.safetensors`);
  const row: CompareRow = { method, targetBits: bits, bpw: null, quantizeSeconds: null };
  let lm: CausalLM | undefined;
  let quantized: LoadedModel | undefined;
  try {
    // rtn and gptq have no k-means, so they never need the device
    const gpu = method === "rtn" || method === "gptq" ? null : options.gpu;
    const { codebookScope, ...settings } = options.quantize ?? {};
    const q = await quantizeModel(model, stats, {
      ...settings,
      // Codebook sharing applies to the vector-quantization methods; rtn and gptq have none.
      codebookScope: method === "rtn" || method === "gptq" ? undefined : codebookScope,
      method,
      bits,
      out: path,
      gpu,
      gpuUse: gpu ? options.gpuUse ?? "auto" : "never",
      quiet: options.quiet,
      statisticsPath: stats.source,
    });
    row.bpw = q.bpw;
    row.quantizeSeconds = q.seconds;

    quantized = await loadModel(path);
    lm = await createCausalLM(quantized, options.engine, {
      gpu: options.gpu ?? undefined,
      contextLength: options.kvLength,
    });
    const progress = new Progress(`eval ${method} ${bits} bpw`, tokens.length, {
      quiet: options.quiet,
      unit: "tokens",
    });
    // NOTE: the full model's logits are recomputed for every row; caching them would cost
    // tokens * vocab floats, too much for large vocabularies.
    row.result = await evaluate(lm, tokens, { ctx: options.ctx, ref: full, progress });
    progress.finish();
    row.zeroShot = await zeroShot(lm, model.tokenizer, options.questions);
    if (options.keepModels) row.path = path;
  } catch (err) {
    row.error = err instanceof Error ? err.message : String(err);
  } finally {
    lm?.dispose();
    quantized?.weights.close();
    if (!options.keepModels) await Deno.remove(path).catch(() => {});
  }
  return row;
}

/**
 * KV cache length of every model: the evaluation window, or with zero-shot questions at
 * least {@linkcode DEFAULT_COMPARE_CTX} positions (within the model's context).
 */
function kvLength(model: LoadedModel, ctx: number, questions: readonly ChoiceQuestion[]): number {
  // NOTE: a question longer than this cache fails its row with "Context is full"; common
  // benchmark questions are a few hundred tokens.
  if (questions.length === 0) return ctx;
  return Math.max(ctx, Math.min(DEFAULT_COMPARE_CTX, model.config.maxSeqLen));
}

/** Scores the questions with `lm`; undefined without questions. */
async function zeroShot(
  lm: CausalLM,
  tokenizer: Tokenizer | null,
  questions: readonly ChoiceQuestion[],
): Promise<ZeroShotSummary | undefined> {
  if (questions.length === 0) return undefined;
  const { average } = await evaluateChoiceTasks(lm, tokenizer, questions);
  return {
    acc: average.acc,
    acc_norm: average.acc_norm,
    tasks: average.tasks,
    questions: average.questions,
  };
}
