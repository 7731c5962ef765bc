/**
 * The bodies of the pipeline's steps. Each reads files, calls one library function
 * (calibrate, allocateBits, quantizeModel, evaluate) and writes one file in the output
 * folder. The step runner decides whether a step runs at all.
 *
 * @module
 */
import type { SensitivityKind } from "../allocate/sensitivity.ts";
import { loadCalibrationData } from "../calibrate/data.ts";
import { createEngine } from "../calibrate/create_engine.ts";
import { calibrate } from "../calibrate/calibrate.ts";
import { allocateBits, type DistortionKind } from "../allocate/allocate_bits.ts";
import { trialQuantization } from "../quantize/trial.ts";
import { openFisherStats } from "../allocate/fisher_source.ts";
import { writePlan } from "../allocate/plan_io.ts";
import { planCodebookScope, readWcsgPlan } from "../quantize/plan.ts";
import type { CodebookScope } from "../quantize/scope.ts";
import { quantizeModel } from "../quantize/quantize_model.ts";
import { totalBytes } from "../quantize/layer_report.ts";
import { openStatistics } from "../quantize/statistics.ts";
import type { QuantMethod } from "../quantize/types.ts";
import { type EvalResult, evaluate } from "../eval/evaluate.ts";
import { evaluateChoiceTasks } from "../eval/zero_shot.ts";
import type { ChoiceQuestion } from "../data/choice_tasks.ts";
import { loadModel } from "../model/load.ts";
import { Progress } from "../util/progress.ts";
import { writeTextFileAtomic } from "../util/atomic_write.ts";
import type { PlanScope } from "../allocate/plan.ts";
import type { PipelineResources } from "./resources.ts";

/** Options of {@linkcode calibrateStep}. */
export interface CalibrateStepOptions {
  /** Token files (the sampled windows file, or the user's data files). */
  files: string[];
  /** Sequences to use, or undefined for every full window. */
  sequences?: number;
  /** Output statistics file. */
  out: string;
  /** No progress on stderr. */
  quiet: boolean;
}

/**
 * Computes the Fisher statistics of every linear layer over the calibration data.
 *
 * @param resources Model, engine and sequence length.
 * @param options Data, output and verbosity.
 * @returns Sequences, mean loss (nats) and throughput.
 */
export async function calibrateStep(
  resources: PipelineResources,
  options: CalibrateStepOptions,
): Promise<Record<string, unknown>> {
  const { model, seqLen } = resources;
  const data = await loadCalibrationData(model, {
    files: options.files,
    seqLen,
    sequences: options.sequences,
  });
  const engine = await createEngine(model, resources.engine, {
    gpu: await resources.gpu(),
    fullG: false,
  });
  try {
    const result = await calibrate({ model, data, engine, out: options.out, quiet: options.quiet });
    return {
      data: data.description,
      sequences: result.sequences,
      tokens: result.sequences * seqLen,
      meanLoss: result.meanLoss,
      tokensPerSecond: result.tokensPerSecond,
    };
  } finally {
    engine.dispose();
  }
}

/** Options of {@linkcode allocateStep}. */
export interface AllocateStepOptions {
  /** Statistics file from the calibrate step. */
  fisher: string;
  /** Budget in bits per weight. */
  bits: number;
  /** Channel groups per layer. */
  groups: number;
  /** Vector length v. */
  vectorLength: number;
  /** Budget per layer or over the whole model. */
  scope: PlanScope;
  /** Codebook scope the plan is allocated for. */
  codebookScope: CodebookScope;
  /** Channel sensitivity formula of the allocation. */
  sensitivity: SensitivityKind;
  /** Distortion the plan is solved with; "measured" runs trial quantizations with `method`. */
  distortion: DistortionKind;
  /** Method the plan is for (the trial quantizations use it). */
  method: QuantMethod;
  /** Seed of the trial quantizations' k-means. */
  seed: number;
  /** Output plan file. */
  out: string;
  /** No progress on stderr. */
  quiet: boolean;
}

/**
 * Allocates codebook sizes per channel group (WCSG) and writes the plan.
 *
 * @param resources The original model (shapes and row variances).
 * @param options Statistics, budget and output.
 * @returns Achieved bits per weight, solver and layer count.
 */
export async function allocateStep(
  resources: PipelineResources,
  options: AllocateStepOptions,
): Promise<Record<string, unknown>> {
  const stats = await openFisherStats(options.fisher);
  const trialStats = options.distortion === "measured"
    ? await openStatistics(options.fisher)
    : null;
  try {
    const trial = trialStats
      ? trialQuantization(resources.model, trialStats, {
        method: options.method as "kmeans" | "vptq" | "rsavq",
        codebookScope: options.codebookScope,
        vectorLength: options.vectorLength,
        seed: options.seed,
        gpu: (await resources.gpu()) ?? null,
        quiet: options.quiet,
      })
      : undefined;
    const plan = await allocateBits(stats, resources.model.weights, {
      bits: options.bits,
      groups: options.groups,
      vectorLength: options.vectorLength,
      scope: options.scope,
      codebookScope: options.codebookScope,
      sensitivity: options.sensitivity,
      distortion: options.distortion,
      trial,
      quiet: options.quiet,
    });
    await writePlan(options.out, plan);
    return { bpw: plan.bpw, solver: plan.solver ?? null, layers: Object.keys(plan.layers).length };
  } finally {
    stats.close();
    trialStats?.close();
  }
}

/** Options of {@linkcode quantizeStep}. */
export interface QuantizeStepOptions {
  /** Quantization method. */
  method: QuantMethod;
  /** Target bits per weight. */
  bits: number;
  /** Statistics file, or null for methods that need none. */
  fisher: string | null;
  /** WCSG plan to follow, or null. */
  plan: string | null;
  /** Vector length of the vector-quantization methods (a plan sets its own). */
  vectorLength: number;
  /** Codebook scope ("layer" for rtn and gptq); with a plan it must be the plan's. */
  codebookScope: CodebookScope;
  /** k-means seed. */
  seed: number;
  /** Output quantized model. */
  out: string;
  /** No progress on stderr. */
  quiet: boolean;
}

/** Result of {@linkcode quantizeStep}, stored in the manifest. */
export interface QuantizeStepResult {
  /** Stored bits per weight over the quantized layers. */
  bpw: number;
  /** Seconds quantizeModel took, writing included. */
  seconds: number;
  /** Stored bytes of the quantized layers by component. */
  bytes: Record<string, number>;
}

/**
 * Quantizes every linear layer with one method and writes the quantized model. The
 * embeddings, norms and output head are stored as F16 and are not counted in bpw.
 *
 * @param resources The original model and the device.
 * @param options Method, budget, inputs and output.
 */
export async function quantizeStep(
  resources: PipelineResources,
  options: QuantizeStepOptions,
): Promise<QuantizeStepResult> {
  const stats = options.fisher ? await openStatistics(options.fisher) : null;
  try {
    const plan = options.plan ? await readWcsgPlan(options.plan) : null;
    const gpu = (await resources.gpu()) ?? null;
    const result = await quantizeModel(resources.model, stats, {
      method: options.method,
      bits: options.bits,
      out: options.out,
      plan,
      codebookScope: plan ? planCodebookScope(plan, options.codebookScope) : options.codebookScope,
      vectorLength: plan ? undefined : options.vectorLength,
      seed: options.seed,
      gpu,
      gpuUse: gpu ? "auto" : "never",
      unquantizedDtype: "F16",
      quiet: options.quiet,
      statisticsPath: options.fisher ?? undefined,
    });
    // Shared codebooks are stored once, outside every layer's bytes.
    const bytes = totalBytes(result.layers);
    bytes.codebooks += result.sharedBytes;
    bytes.total += result.sharedBytes;
    return { bpw: result.bpw, seconds: result.seconds, bytes: { ...bytes } };
  } finally {
    stats?.close();
  }
}

/** Options of {@linkcode evaluateStep}. */
export interface EvaluateStepOptions {
  /** Quantized model file. */
  model: string;
  /** Evaluation documents. */
  documents: Int32Array[];
  /** Output JSON file. */
  out: string;
  /** Progress label. */
  label: string;
  /** No progress on stderr. */
  quiet: boolean;
}

/** Result of {@linkcode evaluateStep}: the evaluation figures and the model's file size. */
export type EvaluateStepResult = EvalResult & { file_bytes: number };

/**
 * Measures perplexity, KL divergence from the original model and top-1 agreement of a
 * quantized model, and writes them as JSON.
 *
 * @param resources The original model's forward pass is the reference.
 * @param options Model, data and output.
 */
export async function evaluateStep(
  resources: PipelineResources,
  options: EvaluateStepOptions,
): Promise<EvaluateStepResult> {
  const loaded = await loadModel(options.model);
  try {
    const ref = await resources.original();
    const lm = await resources.forward(loaded);
    try {
      const total = options.documents.reduce((n, d) => n + d.length, 0);
      const progress = new Progress(options.label, total, { quiet: options.quiet, unit: "tokens" });
      const result = await evaluate(lm, options.documents, {
        ctx: resources.seqLen,
        ref,
        progress,
      });
      progress.finish();
      const report = { ...result, file_bytes: (await Deno.stat(options.model)).size };
      await writeTextFileAtomic(options.out, JSON.stringify(report, null, 2) + "\n");
      return report;
    } finally {
      lm.dispose();
    }
  } finally {
    loaded.weights.close();
  }
}

/** Options of {@linkcode evaluateOriginalStep}. */
export interface EvaluateOriginalOptions {
  /** Evaluation documents. */
  documents: Int32Array[];
  /** Output JSON file. */
  out: string;
  /** No progress on stderr. */
  quiet: boolean;
}

/**
 * Measures the original model's perplexity on the evaluation data and writes it as JSON,
 * the baseline row of the results table.
 *
 * @param resources The original model's forward pass.
 * @param options Data and output.
 */
export async function evaluateOriginalStep(
  resources: PipelineResources,
  options: EvaluateOriginalOptions,
): Promise<EvalResult> {
  const total = options.documents.reduce((n, d) => n + d.length, 0);
  const progress = new Progress("eval original", total, { quiet: options.quiet, unit: "tokens" });
  const result = await evaluate(await resources.original(), options.documents, {
    ctx: resources.seqLen,
    progress,
  });
  progress.finish();
  await writeTextFileAtomic(options.out, JSON.stringify(result, null, 2) + "\n");
  return result;
}

/** Options of {@linkcode zeroShotStep}. */
export interface ZeroShotStepOptions {
  /** Quantized model file, or null for the original model. */
  model: string | null;
  /** Parsed multiple-choice questions. */
  questions: readonly ChoiceQuestion[];
  /** Output JSON file. */
  out: string;
  /** Progress label. */
  label: string;
  /** No progress on stderr. */
  quiet: boolean;
}

/** Result of {@linkcode zeroShotStep}: accuracies averaged over tasks, as fractions. */
export interface ZeroShotStepResult {
  /** Tasks averaged. */
  tasks: number;
  /** Questions over all tasks. */
  questions: number;
  acc: number;
  acc_stderr: number;
  acc_norm: number;
  acc_norm_stderr: number;
}

/**
 * Scores multiple-choice questions zero-shot with the original or a quantized model and
 * writes the per-task and average accuracies as JSON.
 *
 * @param resources Engine, device and the original model (whose tokenizer encodes text questions).
 * @param options Model, questions and output.
 */
export async function zeroShotStep(
  resources: PipelineResources,
  options: ZeroShotStepOptions,
): Promise<ZeroShotStepResult> {
  const loaded = options.model ? await loadModel(options.model) : null;
  try {
    const lm = loaded ? await resources.forward(loaded) : await resources.original();
    try {
      const progress = new Progress(options.label, options.questions.length, {
        quiet: options.quiet,
        unit: "questions",
      });
      const result = await evaluateChoiceTasks(lm, resources.model.tokenizer, options.questions, {
        progress,
      });
      progress.finish();
      await writeTextFileAtomic(
        options.out,
        JSON.stringify({ tasks: result.tasks, average: result.average }, null, 2) + "\n",
      );
      return { ...result.average };
    } finally {
      if (loaded) lm.dispose();
    }
  } finally {
    loaded?.weights.close();
  }
}
