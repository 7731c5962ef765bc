/**
 * Options of the pipeline (calibrate, allocate, quantize, evaluate) with their defaults in
 * one place, and the checks that run before any work starts.
 *
 * @module
 */
import { DISTORTION_KINDS, type DistortionKind, isDistortionKind } from "../quantize/plan.ts";
import { UsageError } from "../errors.ts";
import { CORPUS_DATA } from "../data/corpus.ts";
import type { Engine } from "../eval/engine.ts";
import type { PlanScope } from "../allocate/plan.ts";
import { CODEBOOK_SCOPES, type CodebookScope } from "../quantize/scope.ts";
import { QUANT_METHODS, type QuantMethod } from "../quantize/types.ts";

/** Options of {@linkcode runPipeline}; every field but `model`, `out` and `bits` has a default. */
export interface PipelineOptions {
  /** Checkpoint to quantize (llama2.c .bin, GGUF or Hugging Face folder). */
  model: string;
  /** Output folder: every step's file, manifest.json and report.html go here. */
  out: string;
  /** Target bits per weight, one run of every method per value. */
  bits: number[];
  /** Main method. Default "rsavq"; vector-quantization methods follow a WCSG plan. */
  method?: QuantMethod;
  /** Baselines quantized at the same bits and reported in the same table. Default none. */
  compare?: QuantMethod[];
  /**
   * Calibration data files (text, .json or .bin/.u32 ids), or `["corpus"]` for the npm
   * corpus's training part. Default: the corpus for a model with a tokenizer, otherwise a
   * stream sampled from the model.
   */
  calibData?: string[];
  /** Calibration tokens: the size of the corpus sample or sampled stream (default 8192), or a cap on the files' tokens (default all). */
  calibTokens?: number;
  /**
   * Evaluation data files, or `["corpus"]` for the npm corpus's held-out part. Default: the
   * corpus for a model with a tokenizer, otherwise a stream sampled with another seed.
   */
  evalData?: string[];
  /** Evaluation tokens: the size of the corpus sample or sampled stream (default 8192), or a cap on the files' tokens (default all). */
  evalTokens?: number;
  /** Tokens per calibration sequence and per evaluation window. Default min(512, the model's context). */
  seqLen?: number;
  /** Multiple-choice JSONL task files scored zero-shot on every model. Default none. */
  choiceTasks?: string[];
  /** Seed of the calibration stream and of k-means; the evaluation stream uses seed + 1. Default 1. */
  seed?: number;
  /** Forward and backward engine of calibration, sampling and evaluation. Default "gpu". */
  engine?: Engine;
  /** Channel groups per layer in the WCSG plan. Default 1. */
  groups?: number;
  /** Vector length of the vector-quantization methods. Default 4. */
  vectorLength?: number;
  /** Whether the bit budget holds for every layer or for the whole model. Default "model". */
  scope?: PlanScope;
  /**
   * Extent of codebook sharing of the vector-quantization methods (the main method and
   * kmeans/vptq baselines): per layer, block, layer type or the whole model. The plan is
   * allocated for it. Default "block", or "layer" with `scope` "layer".
   */
  codebookScope?: CodebookScope;
  /**
   * Distortion the WCSG plan is solved with: "model" (high-rate model) or "measured"
   * (trial quantizations at a few codebook sizes; needs one group per layer). Default
   * "measured" with one group per layer, else "model".
   */
  distortion?: DistortionKind;
  /** Print no progress on stderr. Default false. */
  quiet?: boolean;
}

/** Options with every default filled in, as recorded in the manifest. */
export interface ResolvedPipelineOptions {
  /** Checkpoint path. */
  model: string;
  /** Output folder. */
  out: string;
  /** Bit widths, ascending. */
  bits: number[];
  /** Main method. */
  method: QuantMethod;
  /** Baselines. */
  compare: QuantMethod[];
  /** Calibration files; empty when the stream is sampled. */
  calibData: string[];
  /** Sampled calibration tokens or a cap on the files; null for every token of the files. */
  calibTokens: number | null;
  /** Evaluation files; empty when the stream is sampled. */
  evalData: string[];
  /** Sampled evaluation tokens or a cap on the files; null for every token of the files. */
  evalTokens: number | null;
  /** Requested sequence length, or null for the default (the manifest stores the one used). */
  seqLen: number | null;
  /** Multiple-choice task files; empty for none. */
  choiceTasks: string[];
  /** Seed of the calibration stream and of k-means. */
  seed: number;
  /** Forward engine. */
  engine: Engine;
  /** Channel groups per layer. */
  groups: number;
  /** Vector length of the vector-quantization methods. */
  vectorLength: number;
  /** Budget scope of the plan. */
  scope: PlanScope;
  /** Codebook scope of the vector-quantization methods. */
  codebookScope: CodebookScope;
  /** Distortion of the WCSG plan. */
  distortion: DistortionKind;
  /** No progress on stderr. */
  quiet: boolean;
}

/** Defaults of the optional {@linkcode PipelineOptions}. */
export const PIPELINE_DEFAULTS = {
  method: "rsavq" as QuantMethod,
  /** Tokens of a corpus sample or sampled stream, for calibration or evaluation. */
  sampledTokens: 8192,
  /** Upper bound of the default sequence length (llama.cpp's perplexity tool uses 512 too). */
  seqLen: 512,
  seed: 1,
  /** Least KV cache length when multiple-choice tasks are scored (capped at the model's context). */
  choiceContext: 2048,
  engine: "gpu" as Engine,
  // One channel group and a model-wide budget measured best on small models: on 64-wide
  // layers each extra group's codebook and channel order cost more than the grouping gains
  // (docs/benchmarks.md, ablation and pipeline sections).
  groups: 1,
  vectorLength: 4,
  scope: "model" as PlanScope,
  // One codebook per transformer block measured best on stories260K at 2 and 3 bits, for
  // rsavq and vptq alike (docs/plan.md). It also bounds k-means memory to one block, which
  // a model-wide codebook does not. A per-layer budget needs per-layer codebooks.
  codebookScope: "block" as CodebookScope,
  // Trial quantizations fix the 2-bit plan on the reference model (KL 0.018 against 0.043
  // with the high-rate model) and cost a few quantizations (docs/benchmarks.md).
  distortion: "measured" as DistortionKind,
};

/** Methods that quantize with vector codebooks and so can follow a WCSG plan. */
export const PLAN_METHODS: ReadonlySet<QuantMethod> = new Set(["kmeans", "vptq", "rsavq"]);

/**
 * Fills in defaults and checks every option that can be checked without the model.
 *
 * @example
 * ```ts
 * import { resolvePipelineOptions } from "./options.ts";
 * const o = resolvePipelineOptions({ model: "m.bin", out: "out", bits: [2], compare: ["rtn"] });
 * if (o.method !== "rsavq" || o.calibTokens !== 8192) throw new Error();
 * ```
 * @param options Options as given.
 * @throws {UsageError} Naming the option, the value and what is allowed.
 */
export function resolvePipelineOptions(options: PipelineOptions): ResolvedPipelineOptions {
  if (!options.model) throw new UsageError("Missing model: pass --model PATH");
  if (!options.out) throw new UsageError("Missing output folder: pass --out DIR");
  if (!Array.isArray(options.bits) || options.bits.length === 0) {
    throw new UsageError("Missing bits: pass --bits B or a list such as --bits 2,3");
  }
  for (const b of options.bits) {
    if (!(Number.isFinite(b) && b > 0 && b <= 16)) {
      throw new UsageError(
        `Invalid --bits value ${b}: expected bits per weight in (0, 16]`,
      );
    }
  }
  if (new Set(options.bits).size !== options.bits.length) {
    throw new UsageError(`Invalid --bits ${options.bits.join(",")}: a value is repeated`);
  }

  const method = options.method ?? PIPELINE_DEFAULTS.method;
  checkMethod("--method", method);
  const compare = options.compare ?? [];
  for (const m of compare) checkMethod("--compare", m);
  if (compare.includes(method)) {
    throw new UsageError(
      `--compare lists ${method}, which is already the main --method: remove it from --compare`,
    );
  }
  if (new Set(compare).size !== compare.length) {
    throw new UsageError(`--compare ${compare.join(",")} repeats a method`);
  }

  const calibData = options.calibData ?? [];
  const evalData = options.evalData ?? [];
  for (const [flag, data] of [["--calib-data", calibData], ["--eval-data", evalData]] as const) {
    if (data.includes(CORPUS_DATA) && data.length > 1) {
      throw new UsageError(
        `${flag} ${
          data.join(" ")
        }: "${CORPUS_DATA}" stands for the npm corpus and cannot be mixed with files; pass ./${CORPUS_DATA} for a file of that name`,
      );
    }
  }
  // the corpus gives its training part to calibration and its held-out part to evaluation
  const shared = calibData.filter((f) => evalData.includes(f) && f !== CORPUS_DATA);
  if (shared.length > 0) {
    throw new UsageError(
      `${shared[0]} is both calibration and evaluation data: evaluate on held-out data`,
    );
  }
  const calibTokens = optionalCount("--calib-tokens", options.calibTokens, 2);
  const evalTokens = optionalCount("--eval-tokens", options.evalTokens, 2);
  const seqLen = optionalCount("--seq-len", options.seqLen, 2);
  const seed = options.seed ?? PIPELINE_DEFAULTS.seed;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new UsageError(`Invalid --seed ${seed}: expected a non-negative integer`);
  }
  const engine = options.engine ?? PIPELINE_DEFAULTS.engine;
  if (engine !== "gpu" && engine !== "reference") {
    throw new UsageError(`Invalid --engine ${engine}: expected gpu or reference`);
  }
  const scope = options.scope ?? PIPELINE_DEFAULTS.scope;
  if (scope !== "layer" && scope !== "model") {
    throw new UsageError(`Invalid --scope ${scope}: expected layer or model`);
  }
  const codebookScope = options.codebookScope ??
    (scope === "layer" ? "layer" : PIPELINE_DEFAULTS.codebookScope);
  if (!CODEBOOK_SCOPES.includes(codebookScope)) {
    throw new UsageError(
      `Invalid --codebook-scope ${codebookScope}: expected ${CODEBOOK_SCOPES.join(", ")}`,
    );
  }
  if (codebookScope !== "layer" && scope === "layer") {
    throw new UsageError(
      `--scope layer cannot hold for every layer when codebooks are shared by ${codebookScope}: use --scope model with --codebook-scope ${codebookScope}`,
    );
  }

  const groups = optionalCount("--groups", options.groups, 1) ?? PIPELINE_DEFAULTS.groups;
  const distortion = options.distortion ?? (groups === 1 ? PIPELINE_DEFAULTS.distortion : "model");
  if (!isDistortionKind(distortion)) {
    throw new UsageError(
      `Invalid --distortion ${distortion}: expected ${DISTORTION_KINDS.join(" or ")}`,
    );
  }
  if (distortion === "measured" && groups !== 1) {
    throw new UsageError(
      `--distortion measured measures whole layers, so it needs one group per layer: drop --groups ${groups}`,
    );
  }

  return {
    model: options.model,
    out: options.out,
    bits: [...options.bits].sort((a, b) => a - b),
    method,
    compare,
    calibData,
    calibTokens: calibTokens ?? (isGenerated(calibData) ? PIPELINE_DEFAULTS.sampledTokens : null),
    evalData,
    evalTokens: evalTokens ?? (isGenerated(evalData) ? PIPELINE_DEFAULTS.sampledTokens : null),
    seqLen: seqLen ?? null,
    choiceTasks: options.choiceTasks ?? [],
    seed,
    engine,
    groups,
    vectorLength: checkVectorLength(
      optionalCount("--vector-length", options.vectorLength, 1) ?? PIPELINE_DEFAULTS.vectorLength,
    ),
    scope,
    codebookScope,
    distortion,
    quiet: options.quiet ?? false,
  };
}

function checkVectorLength(v: number): number {
  if (![2, 4, 6, 8].includes(v)) {
    throw new UsageError(`Invalid --vector-length ${v}: expected 2, 4, 6 or 8`);
  }
  return v;
}

/**
 * Parses a comma-separated method list such as "rtn,gptq,vptq".
 *
 * @param flag Option name, for messages.
 * @param text The list.
 * @throws {UsageError} On an unknown method.
 */
export function parseMethodList(flag: string, text: string): QuantMethod[] {
  const methods = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const m of methods) checkMethod(flag, m);
  return methods as QuantMethod[];
}

function checkMethod(flag: string, method: string): void {
  if (!(QUANT_METHODS as readonly string[]).includes(method)) {
    throw new UsageError(
      `Invalid ${flag} ${JSON.stringify(method)}: expected one of ${QUANT_METHODS.join(", ")}`,
    );
  }
}

function optionalCount(flag: string, value: number | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new UsageError(`Invalid ${flag} ${value}: expected an integer of at least ${min}`);
  }
  return value;
}

/** True when the pipeline makes the data itself (corpus sample or sampled stream), so its size needs a default. */
function isGenerated(data: string[]): boolean {
  return data.length === 0 || (data.length === 1 && data[0] === CORPUS_DATA);
}
