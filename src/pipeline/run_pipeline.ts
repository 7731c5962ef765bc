/**
 * The pipeline: calibrate, allocate, quantize and evaluate a model in one call. Every step
 * writes a file in the output folder. A manifest there lets a second run reuse every step
 * whose inputs and settings are unchanged, and a self-contained HTML report shows the results.
 *
 * Steps and their files (B is a bit width, M a method):
 * - sample-calibration, sample-evaluation: calib_tokens.json, eval_tokens.json (only
 *   without data files, and calibration only when a step needs statistics; seeds S and S + 1)
 * - calibrate: fisher.safetensors (when a method needs statistics)
 * - allocate-B: plan-B.json (when the main method is a vector-quantization method)
 * - quantize-M-B: M-B.safetensors
 * - eval-original, eval-M-B: eval-original.json, eval-M-B.json
 * - zeroshot-original, zeroshot-M-B: zeroshot-original.json, zeroshot-M-B.json (only
 *   with multiple-choice task files)
 *
 * @module
 */
import { join } from "node:path";
import { UsageError } from "../errors.ts";
import { loadModel } from "../model/load.ts";
import { readTokenFile } from "../data/token_files.ts";
import { METHODS_NEEDING_STATISTICS, type QuantMethod } from "../quantize/types.ts";
import { writeReport } from "../report/report.ts";
import { type FileFingerprint, FileHasher } from "./file_hash.ts";
import { type Manifest, MANIFEST_FORMAT, MANIFEST_VERSION, readManifest, type StepRecord, toolVersions, writeManifest } from "./manifest.ts";
import { PLAN_METHODS, type PipelineOptions, PIPELINE_DEFAULTS, resolvePipelineOptions } from "./options.ts";
import { PipelineResources } from "./resources.ts";
import { StepRunner, type StepSpec } from "./step_runner.ts";
import { allocateStep, calibrateStep, evaluateOriginalStep, evaluateStep, type EvaluateStepResult, quantizeStep, type QuantizeStepResult, zeroShotStep, type ZeroShotStepResult } from "./steps.ts";
import { type ChoiceQuestion, readChoiceTasks } from "../data/choice_tasks.ts";
import { formatSummaryTable, type ResultRow } from "./summary.ts";
import { checkDisjointWindows, readDocuments, sampleWindowsFile } from "./token_streams.ts";

/** Result of {@linkcode runPipeline}. */
export interface PipelineResult {
  /** The manifest as written. */
  manifest: Manifest;
  /** The results table as text. */
  table: string;
  /** Steps reused from an earlier run. */
  reused: string[];
  /** Steps run. */
  ran: string[];
  /** Path of the report. */
  report: string;
}

/** Hooks of {@linkcode runPipeline}. */
export interface PipelineHooks {
  /** Receives one line per step started, reused or finished (default: stderr unless quiet). */
  log?: (line: string) => void;
}

/**
 * Runs calibrate, allocate, quantize and evaluate over `options.out`, reusing finished
 * steps, and writes manifest.json and report.html there.
 *
 * @example Quantize stories260K at 2 bits against RTN
 * ```ts ignore
 * const { table } = await runPipeline({ model: "stories260K.bin", bits: [2], compare: ["rtn"], out: "out" });
 * console.log(table);
 * ```
 * @param options Model, bit widths, methods, data and output folder.
 * @param hooks Where step lines go.
 * @throws {UsageError} On invalid options or data that cannot serve.
 * @throws {FormatError} On unreadable model, data or an earlier manifest.
 */
export async function runPipeline(options: PipelineOptions, hooks: PipelineHooks = {}): Promise<PipelineResult> {
  const o = resolvePipelineOptions(options);
  const log = hooks.log ?? ((line: string) => o.quiet || console.error(line));
  const startedAt = new Date();
  const start = performance.now();
  const dir = o.out;
  await Deno.mkdir(dir, { recursive: true });
  const previous = await readManifest(dir);
  const hasher = new FileHasher(knownFingerprints(previous, dir));
  const tool = toolVersions();

  // task files are parsed before any model is read, so a malformed line fails at once
  const questions: ChoiceQuestion[] = o.choiceTasks.length ? (await readChoiceTasks(o.choiceTasks)).questions : [];
  const model = await loadModel(o.model);
  const ctx = model.config.maxSeqLen;
  const seqLen = o.seqLen ?? Math.min(PIPELINE_DEFAULTS.seqLen, ctx);
  // multiple-choice contexts can be longer than the evaluation window
  const kvLength = questions.length ? Math.min(ctx, Math.max(seqLen, PIPELINE_DEFAULTS.choiceContext)) : seqLen;
  const resources = new PipelineResources(model, o.engine, seqLen, kvLength);
  try {
    if (seqLen > ctx) throw new UsageError(`Invalid --seq-len ${seqLen}: ${o.model} has a context of ${ctx} tokens; pass --seq-len ${ctx} or less`);
    const sampled = o.calibData.length === 0 || o.evalData.length === 0;
    if (sampled && model.config.bosId === undefined) {
      throw new UsageError(`${o.model} has no BOS token id, so no stream can be sampled from it: pass --calib-data and --eval-data files`);
    }
    const inputs = {
      model: await hasher.hash(o.model),
      calibData: await Promise.all(o.calibData.map((f) => hasher.hash(f))),
      evalData: await Promise.all(o.evalData.map((f) => hasher.hash(f))),
    };
    const calibDigests = new Set(inputs.calibData.map((f) => f.sha256));
    const sharedFile = inputs.evalData.find((f) => calibDigests.has(f.sha256));
    if (sharedFile) throw new UsageError(`${sharedFile.path} has the same contents as a calibration file: evaluate on held-out data`);

    const runner = new StepRunner(dir, previous?.steps ?? {}, hasher, tool.version, log);
    const results: ResultRow[] = [];
    const manifest = (): Manifest => ({
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      tool,
      settings: { ...o, seqLen },
      inputs,
      steps: runner.records,
      results,
      run: { startedAt: startedAt.toISOString(), seconds: (performance.now() - start) / 1000, reused: runner.reused, ran: runner.ran },
    });
    const step = async (spec: StepSpec): Promise<StepRecord> => {
      const { record } = await runner.run(spec);
      await writeManifest(dir, manifest());
      return record;
    };
    const path = (name: string) => join(dir, name);
    const fileInputs = (role: string, files: string[]) => Object.fromEntries(files.map((f, i) => [`${role}${i}`, f]));

    const methods: QuantMethod[] = [o.method, ...o.compare];
    const usesPlan = PLAN_METHODS.has(o.method);
    const needsFisher = usesPlan || methods.some((m) => METHODS_NEEDING_STATISTICS.has(m));

    // data: sampled windows, or the user's files
    let calibFiles = o.calibData;
    let calibAfter: string[] = [];
    if (needsFisher && o.calibData.length === 0) {
      await step({
        name: "sample-calibration",
        inputs: { model: o.model },
        settings: { tokens: o.calibTokens, seed: o.seed, seqLen, engine: o.engine },
        after: [],
        outputs: ["calib_tokens.json"],
        run: () => sampleWindowsFile(resources, { tokens: o.calibTokens!, seed: o.seed, out: path("calib_tokens.json"), label: "sample calibration", quiet: o.quiet }),
      });
      calibFiles = [path("calib_tokens.json")];
      calibAfter = ["sample-calibration"];
    }
    let evalFiles = o.evalData;
    let evalAfter: string[] = [];
    if (o.evalData.length === 0) {
      await step({
        name: "sample-evaluation",
        inputs: { model: o.model },
        settings: { tokens: o.evalTokens, seed: o.seed + 1, seqLen, engine: o.engine },
        after: [],
        outputs: ["eval_tokens.json"],
        run: () => sampleWindowsFile(resources, { tokens: o.evalTokens!, seed: o.seed + 1, out: path("eval_tokens.json"), label: "sample evaluation", quiet: o.quiet }),
      });
      evalFiles = [path("eval_tokens.json")];
      evalAfter = ["sample-evaluation"];
    }
    if (needsFisher && o.calibData.length === 0 && o.evalData.length === 0) {
      const vocabSize = model.config.vocabSize;
      checkDisjointWindows(await readTokenFile(calibFiles[0], { vocabSize }), await readTokenFile(evalFiles[0], { vocabSize }));
    }
    let evalDocuments: Int32Array[] | null = null;
    const documents = async () => evalDocuments ??= o.evalData.length === 0
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
        after: calibAfter,
        outputs: ["fisher.safetensors"],
        run: () => calibrateStep(resources, { files: calibFiles, sequences, out: fisher, quiet: o.quiet }),
      });
    }

    // reference figures of the original model on the evaluation data
    const original = await step({
      name: "eval-original",
      inputs: { model: o.model, ...fileInputs("data", evalFiles) },
      settings: { seqLen, evalTokens: o.evalTokens, engine: o.engine },
      after: evalAfter,
      outputs: ["eval-original.json"],
      run: async () => evaluateOriginalStep(resources, { documents: await documents(), out: path("eval-original.json"), quiet: o.quiet }),
    });
    const ref = original.result as { ppl: number; nll_stderr: number };
    const zeroShot = async (name: string, quantized: string | null, after: string[]) => {
      if (questions.length === 0) return {};
      const record = await step({
        name: `zeroshot-${name}`,
        inputs: { model: o.model, ...(quantized ? { quantized } : {}), ...fileInputs("tasks", o.choiceTasks) },
        settings: { engine: o.engine },
        after,
        outputs: [`zeroshot-${name}.json`],
        run: () => zeroShotStep(resources, { model: quantized, questions, out: path(`zeroshot-${name}.json`), label: `zero-shot ${name}`, quiet: o.quiet }),
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
      fileBytes: inputs.model.bytes,
      quantizeSeconds: null,
      file: o.model,
      ...(await zeroShot("original", null, [])),
    });

    for (const bits of o.bits) {
      const planName = `plan-${bits}.json`;
      if (usesPlan) {
        await step({
          name: `allocate-${bits}`,
          inputs: { model: o.model, fisher },
          settings: { bits, groups: o.groups, vectorLength: o.vectorLength, scope: o.scope },
          after: ["calibrate"],
          outputs: [planName],
          run: () => allocateStep(resources, { fisher, bits, groups: o.groups, vectorLength: o.vectorLength, scope: o.scope, out: path(planName), quiet: o.quiet }),
        });
      }
      for (const method of methods) {
        const name = `${method}-${bits}`;
        const stats = METHODS_NEEDING_STATISTICS.has(method) ? fisher : null;
        const plan = method === o.method && usesPlan ? path(planName) : null;
        const quantized = await step({
          name: `quantize-${name}`,
          inputs: { model: o.model, ...(stats ? { fisher } : {}), ...(plan ? { plan } : {}) },
          settings: { method, bits, vectorLength: o.vectorLength, seed: o.seed, unquantized: "F16", engine: o.engine },
          after: [...(stats ? ["calibrate"] : []), ...(plan ? [`allocate-${bits}`] : [])],
          outputs: [`${name}.safetensors`],
          run: () => quantizeStep(resources, { method, bits, fisher: stats, plan, vectorLength: o.vectorLength, seed: o.seed, out: path(`${name}.safetensors`), quiet: o.quiet }),
        });
        const evaluated = await step({
          name: `eval-${name}`,
          inputs: { model: o.model, quantized: path(`${name}.safetensors`), ...fileInputs("data", evalFiles) },
          settings: { seqLen, evalTokens: o.evalTokens, engine: o.engine },
          after: [`quantize-${name}`, ...evalAfter],
          outputs: [`eval-${name}.json`],
          run: async () => evaluateStep(resources, { model: path(`${name}.safetensors`), documents: await documents(), out: path(`eval-${name}.json`), label: `eval ${name}`, quiet: o.quiet }),
        });
        results.push({
          ...resultRow(method, bits, `${name}.safetensors`, quantized.result as QuantizeStepResult, evaluated.result as EvaluateStepResult),
          ...(await zeroShot(name, path(`${name}.safetensors`), [`quantize-${name}`])),
        });
      }
    }

    const final = manifest();
    await writeManifest(dir, final);
    const report = await writeReport(dir, final);
    return { manifest: final, table: formatSummaryTable(results), reused: runner.reused, ran: runner.ran, report };
  } finally {
    await resources.dispose();
  }
}

function resultRow(method: string, bits: number, file: string, q: QuantizeStepResult, e: EvaluateStepResult): ResultRow {
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

/** Fingerprints an earlier manifest recorded, with output paths made relative to the working folder. */
function knownFingerprints(previous: Manifest | null, dir: string): FileFingerprint[] {
  if (!previous) return [];
  const known: FileFingerprint[] = [previous.inputs?.model, ...(previous.inputs?.calibData ?? []), ...(previous.inputs?.evalData ?? [])]
    .filter((f): f is FileFingerprint => f !== undefined);
  for (const record of Object.values(previous.steps)) {
    known.push(...Object.values(record.inputs ?? {}));
    for (const [name, f] of Object.entries(record.outputs ?? {})) known.push({ ...f, path: join(dir, name) });
  }
  return known;
}
