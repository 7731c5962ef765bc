/**
 * The pipeline's steps in order, each a file in the output folder: sampled data,
 * calibration, the original model's evaluation, and per bit width the allocation plan and
 * every method's quantized model and evaluation. Returns the results table's rows.
 *
 * @module
 */
import { join } from "node:path";
import { readTokenFile } from "../data/token_files.ts";
import type { ChoiceQuestion } from "../data/choice_tasks.ts";
import { METHODS_NEEDING_STATISTICS, type QuantMethod } from "../quantize/types.ts";
import { QUANTIZED_VERSION } from "../formats/quantized_types.ts";
import { PLAN_VERSION } from "../allocate/plan.ts";
import type { StepRecord } from "./manifest.ts";
import { PLAN_METHODS, type ResolvedPipelineOptions } from "./options.ts";
import type { PipelineResources } from "./resources.ts";
import type { StepSpec } from "./step_runner.ts";
import {
  allocateStep,
  calibrateStep,
  evaluateOriginalStep,
  evaluateStep,
  type EvaluateStepResult,
  quantizeStep,
  type QuantizeStepResult,
  zeroShotStep,
  type ZeroShotStepResult,
} from "./steps.ts";
import type { ResultRow } from "./summary.ts";
import {
  checkDisjointWindows,
  corpusTextFile,
  readDocuments,
  sampleWindowsFile,
} from "./token_streams.ts";
import {
  CORPUS_CHARS_PER_TOKEN,
  CORPUS_CHUNK_CHARS,
  CORPUS_DATA,
  DEFAULT_HELD_OUT_FRACTION,
  NPM_TEXT_SOURCES,
} from "../data/corpus.ts";

/** Inputs of {@linkcode scheduleSteps}. */
export interface ScheduleContext {
  /** Resolved options. */
  o: ResolvedPipelineOptions;
  /** Output folder. */
  dir: string;
  /** Tokens per calibration sequence and evaluation window. */
  seqLen: number;
  /** Model, engine and device. */
  resources: PipelineResources;
  /** Parsed multiple-choice questions; empty for none. */
  questions: ChoiceQuestion[];
  /** Size of the original model's files in bytes. */
  modelBytes: number;
  /** Reuses or runs one step and saves the manifest. */
  step: (spec: StepSpec) => Promise<StepRecord>;
  /** Receives each results row as soon as its steps are done. */
  results: ResultRow[];
}

/**
 * Reuses or runs every step of the pipeline in order and appends the results rows.
 *
 * @param context Options, folder, resources and the step function.
 */
export async function scheduleSteps(context: ScheduleContext): Promise<void> {
  const { o, dir, seqLen, resources, questions, step, results } = context;
  const model = resources.model;
  const path = (name: string) => join(dir, name);
  const fileInputs = (role: string, files: string[]) =>
    Object.fromEntries(files.map((f, i) => [`${role}${i}`, f]));

  const methods: QuantMethod[] = [o.method, ...o.compare];
  const usesPlan = PLAN_METHODS.has(o.method);
  const needsFisher = usesPlan || methods.some((m) => METHODS_NEEDING_STATISTICS.has(m));

  // data: the user's files, a sample of the npm corpus, or windows sampled from the model
  const calib = needsFisher ? await prepareData(context, "calibration") : null;
  const evaluation = await prepareData(context, "evaluation");
  const calibFiles = calib?.files ?? [];
  const evalFiles = evaluation.files;
  if (calib?.kind === "sampled" && evaluation.kind === "sampled") {
    const vocabSize = model.config.vocabSize;
    checkDisjointWindows(
      await readTokenFile(calibFiles[0], { vocabSize }),
      await readTokenFile(evalFiles[0], { vocabSize }),
    );
  }
  let evalDocuments: Int32Array[] | null = null;
  const documents = async () =>
    evalDocuments ??= evaluation.kind === "sampled"
      ? await readTokenFile(evalFiles[0], { vocabSize: model.config.vocabSize })
      : await readDocuments(evalFiles, resources, o.evalTokens);

  // calibration statistics, when a method or the plan needs them
  const fisher = path("fisher.safetensors");
  if (needsFisher) {
    const sequences = o.calibTokens === null ? undefined : Math.floor(o.calibTokens / seqLen);
    await step({
      name: "calibrate",
      inputs: { model: o.model, ...fileInputs("data", calibFiles) },
      settings: { seqLen, sequences: sequences ?? null, engine: o.engine, fullG: false },
      after: calib!.after,
      outputs: ["fisher.safetensors"],
      run: () =>
        calibrateStep(resources, { files: calibFiles, sequences, out: fisher, quiet: o.quiet }),
    });
  }

  // reference figures of the original model on the evaluation data
  const original = await step({
    name: "eval-original",
    inputs: { model: o.model, ...fileInputs("data", evalFiles) },
    settings: { seqLen, evalTokens: o.evalTokens, engine: o.engine },
    after: evaluation.after,
    outputs: ["eval-original.json"],
    run: async () =>
      evaluateOriginalStep(resources, {
        documents: await documents(),
        out: path("eval-original.json"),
        quiet: o.quiet,
      }),
  });
  const ref = original.result as { ppl: number; nll_stderr: number };
  const zeroShot = async (name: string, quantized: string | null, after: string[]) => {
    if (questions.length === 0) return {};
    const record = await step({
      name: `zeroshot-${name}`,
      inputs: {
        model: o.model,
        ...(quantized ? { quantized } : {}),
        ...fileInputs("tasks", o.choiceTasks),
      },
      settings: { engine: o.engine },
      after,
      outputs: [`zeroshot-${name}.json`],
      run: () =>
        zeroShotStep(resources, {
          model: quantized,
          questions,
          out: path(`zeroshot-${name}.json`),
          label: `zero-shot ${name}`,
          quiet: o.quiet,
        }),
    });
    const r = record.result as ZeroShotStepResult;
    return { zeroShotAcc: r.acc, zeroShotAccNorm: r.acc_norm };
  };
  results.push({
    method: "original",
    bits: null,
    bpw: null,
    ppl: ref.ppl,
    pplStderr: ref.ppl * ref.nll_stderr,
    kldMean: 0,
    kldP99: 0,
    top1: 1,
    fileBytes: context.modelBytes,
    quantizeSeconds: null,
    file: o.model,
    ...(await zeroShot("original", null, [])),
  });

  for (const bits of o.bits) {
    const planName = `plan-${bits}.json`;
    let allocateSeconds = 0;
    if (usesPlan) {
      const allocated = await step({
        name: `allocate-${bits}`,
        inputs: { model: o.model, fisher },
        // The plan format version is part of the key, so a format change redoes the step.
        settings: {
          bits,
          groups: o.groups,
          vectorLength: o.vectorLength,
          scope: o.scope,
          codebookScope: o.codebookScope,
          sensitivity: "trace",
          distortion: o.distortion,
          // The trial quantizations of a measured plan use the method and the seed.
          ...(o.distortion === "measured" ? { method: o.method, seed: o.seed } : {}),
          planVersion: PLAN_VERSION,
        },
        after: ["calibrate"],
        outputs: [planName],
        run: () =>
          allocateStep(resources, {
            fisher,
            bits,
            groups: o.groups,
            vectorLength: o.vectorLength,
            scope: o.scope,
            codebookScope: o.codebookScope,
            sensitivity: "trace",
            distortion: o.distortion,
            method: o.method,
            seed: o.seed,
            out: path(planName),
            quiet: o.quiet,
          }),
      });
      allocateSeconds = allocated.seconds;
    }
    for (const method of methods) {
      const name = `${method}-${bits}`;
      const stats = METHODS_NEEDING_STATISTICS.has(method) ? fisher : null;
      const plan = method === o.method && usesPlan ? path(planName) : null;
      // rtn and gptq have no codebooks; the vector-quantization methods all share by the same scope.
      const codebookScope = PLAN_METHODS.has(method) ? o.codebookScope : "layer";
      const quantized = await step({
        name: `quantize-${name}`,
        inputs: { model: o.model, ...(stats ? { fisher } : {}), ...(plan ? { plan } : {}) },
        settings: {
          method,
          bits,
          vectorLength: o.vectorLength,
          codebookScope,
          seed: o.seed,
          unquantized: "F16",
          engine: o.engine,
          formatVersion: QUANTIZED_VERSION,
        },
        after: [...(stats ? ["calibrate"] : []), ...(plan ? [`allocate-${bits}`] : [])],
        outputs: [`${name}.safetensors`],
        run: () =>
          quantizeStep(resources, {
            method,
            bits,
            fisher: stats,
            plan,
            vectorLength: o.vectorLength,
            codebookScope,
            seed: o.seed,
            out: path(`${name}.safetensors`),
            quiet: o.quiet,
          }),
      });
      const evaluated = await step({
        name: `eval-${name}`,
        inputs: {
          model: o.model,
          quantized: path(`${name}.safetensors`),
          ...fileInputs("data", evalFiles),
        },
        settings: { seqLen, evalTokens: o.evalTokens, engine: o.engine },
        after: [`quantize-${name}`, ...evaluation.after],
        outputs: [`eval-${name}.json`],
        run: async () =>
          evaluateStep(resources, {
            model: path(`${name}.safetensors`),
            documents: await documents(),
            out: path(`eval-${name}.json`),
            label: `eval ${name}`,
            quiet: o.quiet,
          }),
      });
      const row = resultRow(
        method,
        bits,
        `${name}.safetensors`,
        quantized.result as QuantizeStepResult,
        evaluated.result as EvaluateStepResult,
      );
      // The plan's trial quantizations are part of what this method costs.
      if (plan) row.quantizeSeconds! += allocateSeconds;
      results.push({
        ...row,
        ...(await zeroShot(name, path(`${name}.safetensors`), [`quantize-${name}`])),
      });
    }
  }
}

function resultRow(
  method: string,
  bits: number,
  file: string,
  q: QuantizeStepResult,
  e: EvaluateStepResult,
): ResultRow {
  return {
    method,
    bits,
    bpw: q.bpw,
    ppl: e.ppl,
    pplStderr: e.ppl * e.nll_stderr,
    kldMean: e.kld_mean ?? NaN,
    kldP99: e.kld_p99 ?? NaN,
    top1: e.top1_agreement ?? NaN,
    fileBytes: e.file_bytes,
    quantizeSeconds: q.seconds,
    file,
  };
}

/** Source, files and producing steps of one of the pipeline's data sets. */
interface PreparedData {
  kind: "files" | "corpus" | "sampled";
  files: string[];
  after: string[];
}

/**
 * Prepares calibration or evaluation data. Files are used as they are. For the npm corpus,
 * a step writes a sample of its training part (calibration) or held-out part (evaluation)
 * into the output folder. Otherwise a step samples a stream from the model, with seed + 1
 * for evaluation.
 */
async function prepareData(
  context: ScheduleContext,
  role: "calibration" | "evaluation",
): Promise<PreparedData> {
  const { o, dir, seqLen, resources, step } = context;
  const isCalib = role === "calibration";
  const data = isCalib ? o.calibData : o.evalData;
  const tokens = isCalib ? o.calibTokens : o.evalTokens;
  const seed = isCalib ? o.seed : o.seed + 1;
  const prefix = isCalib ? "calib" : "eval";
  if (data.length === 1 && data[0] === CORPUS_DATA) {
    const name = `corpus-${role}`, file = `${prefix}_text.txt`;
    const part = isCalib ? "train" : "held-out";
    const chars = tokens! * CORPUS_CHARS_PER_TOKEN;
    await step({
      name,
      inputs: {},
      settings: {
        part,
        seed,
        chars,
        chunkChars: CORPUS_CHUNK_CHARS,
        heldOutFraction: DEFAULT_HELD_OUT_FRACTION,
        sources: NPM_TEXT_SOURCES.map((s) => `${s.name}@${s.version}`),
      },
      after: [],
      outputs: [file],
      run: () => corpusTextFile({ part, seed, chars, out: join(dir, file) }),
    });
    return { kind: "corpus", files: [join(dir, file)], after: [name] };
  }
  if (data.length > 0) return { kind: "files", files: data, after: [] };
  const name = `sample-${role}`, file = `${prefix}_tokens.json`;
  await step({
    name,
    inputs: { model: o.model },
    settings: { tokens, seed, seqLen, engine: o.engine },
    after: [],
    outputs: [file],
    run: () =>
      sampleWindowsFile(resources, {
        tokens: tokens!,
        seed,
        out: join(dir, file),
        label: `sample ${role}`,
        quiet: o.quiet,
      }),
  });
  return { kind: "sampled", files: [join(dir, file)], after: [name] };
}
