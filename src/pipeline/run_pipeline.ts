/**
 * The pipeline: calibrate, allocate, quantize and evaluate a model in one call. Every step
 * writes a file in the output folder. A manifest there lets a second run reuse every step
 * whose inputs and settings are unchanged, and a self-contained HTML report shows the results.
 *
 * Steps and their files (B is a bit width, M a method; schedule.ts runs them in order):
 * - corpus-calibration, corpus-evaluation: calib_text.txt, eval_text.txt (with data
 *   "corpus", the default for models with a tokenizer; training and held-out parts)
 * - sample-calibration, sample-evaluation: calib_tokens.json, eval_tokens.json, for models
 *   without a tokenizer and without data files, with seeds S and S + 1
 * - calibration data is prepared only when a step needs statistics
 * - calibrate: fisher.safetensors (when a method needs statistics)
 * - allocate-B: plan-B.json (when the main method is a vector-quantization method)
 * - quantize-M-B: M-B.safetensors
 * - eval-original, eval-M-B: eval-original.json, eval-M-B.json
 * - zeroshot-original, zeroshot-M-B: zeroshot-original.json, zeroshot-M-B.json (only
 *   with multiple-choice task files)
 *
 * @module
 */
import { join, resolve, sep as SEP } from "node:path";
import { UsageError } from "../errors.ts";
import { loadModel } from "../model/load.ts";
import { type ChoiceQuestion, readChoiceTasks } from "../data/choice_tasks.ts";
import { writeReport } from "../report/report.ts";
import { type FileFingerprint, FileHasher } from "./file_hash.ts";
import {
  type Manifest,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  readManifest,
  type StepRecord,
  toolVersions,
  writeManifest,
} from "./manifest.ts";
import {
  PIPELINE_DEFAULTS,
  type PipelineOptions,
  type ResolvedPipelineOptions,
  resolvePipelineOptions,
} from "./options.ts";
import { CORPUS_DATA } from "../data/corpus.ts";
import { PipelineResources } from "./resources.ts";
import { scheduleSteps } from "./schedule.ts";
import { StepRunner, type StepSpec } from "./step_runner.ts";
import { formatSummaryTable, type ResultRow } from "./summary.ts";

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
export async function runPipeline(
  options: PipelineOptions,
  hooks: PipelineHooks = {},
): Promise<PipelineResult> {
  let o = resolvePipelineOptions(options);
  const log = hooks.log ?? ((line: string) => o.quiet || console.error(line));
  const startedAt = new Date();
  const start = performance.now();
  const dir = o.out;
  const existing = await Deno.stat(dir).catch(() => null);
  if (existing && !existing.isDirectory) {
    throw new UsageError(`--out ${dir} is a file: pass a folder for the pipeline's outputs`);
  }
  // the pipeline writes fixed file names into its folder, so no input may live there
  const folder = resolve(dir) + SEP;
  const inputFiles = [o.model, ...o.calibData, ...o.evalData, ...o.choiceTasks]
    .filter((f) => f !== CORPUS_DATA);
  for (const input of inputFiles) {
    if (resolve(input).startsWith(folder)) {
      throw new UsageError(
        `Input ${input} is inside --out ${dir}, where the pipeline writes its files: move it or choose another --out`,
      );
    }
  }
  // data files are checked before anything is created, so a typo leaves no folder behind
  for (
    const [flag, files] of [["--calib-data", o.calibData], ["--eval-data", o.evalData]] as const
  ) {
    for (const file of files) {
      if (file !== CORPUS_DATA && !(await Deno.stat(file).catch(() => null))) {
        throw new UsageError(
          `${flag} ${file}: file not found; check the path (or pass ${CORPUS_DATA} for the npm corpus)`,
        );
      }
    }
  }
  const tool = toolVersions();

  // task files are parsed before any model is read, so a malformed line fails at once
  const questions: ChoiceQuestion[] = o.choiceTasks.length
    ? (await readChoiceTasks(o.choiceTasks)).questions
    : [];
  const model = await loadModel(o.model);
  o = withDefaultData(o, model.tokenizer !== null);
  const ctx = model.config.maxSeqLen;
  const seqLen = o.seqLen ?? Math.min(PIPELINE_DEFAULTS.seqLen, ctx);
  // multiple-choice contexts can be longer than the evaluation window
  const kvLength = questions.length
    ? Math.min(ctx, Math.max(seqLen, PIPELINE_DEFAULTS.choiceContext))
    : seqLen;
  const resources = new PipelineResources(model, o.engine, seqLen, kvLength);
  try {
    if (seqLen > ctx) {
      throw new UsageError(
        `Invalid --seq-len ${seqLen}: ${o.model} has a context of ${ctx} tokens; pass --seq-len ${ctx} or less`,
      );
    }
    const sampled = o.calibData.length === 0 || o.evalData.length === 0;
    if (!model.tokenizer && [...o.calibData, ...o.evalData].includes(CORPUS_DATA)) {
      throw new UsageError(
        `${o.model} has no tokenizer, so the text of --calib-data/--eval-data ${CORPUS_DATA} cannot be encoded: pass token-id files, or leave both out to sample from the model`,
      );
    }
    if (sampled && model.config.bosId === undefined) {
      throw new UsageError(
        `${o.model} has no BOS token id, so no stream can be sampled from it: pass --calib-data and --eval-data files`,
      );
    }

    // the output folder is created only once the model and options have been checked,
    // so a bad run leaves nothing behind
    await Deno.mkdir(dir, { recursive: true });
    const previous = await readManifest(dir);
    const hasher = new FileHasher(knownFingerprints(previous, dir));
    const inputs = {
      model: await hasher.hash(o.model),
      calibData: await Promise.all(dataFiles(o.calibData).map((f) => hasher.hash(f))),
      evalData: await Promise.all(dataFiles(o.evalData).map((f) => hasher.hash(f))),
    };
    const calibDigests = new Set(inputs.calibData.map((f) => f.sha256));
    const sharedFile = inputs.evalData.find((f) => calibDigests.has(f.sha256));
    if (sharedFile) {
      throw new UsageError(
        `${sharedFile.path} has the same contents as a calibration file: evaluate on held-out data`,
      );
    }

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
      run: {
        startedAt: startedAt.toISOString(),
        seconds: (performance.now() - start) / 1000,
        reused: runner.reused,
        ran: runner.ran,
      },
    });
    const step = async (spec: StepSpec): Promise<StepRecord> => {
      const { record } = await runner.run(spec);
      await writeManifest(dir, manifest());
      return record;
    };
    await scheduleSteps({
      o,
      dir,
      seqLen,
      resources,
      questions,
      modelBytes: inputs.model.bytes,
      step,
      results,
    });

    const final = manifest();
    await writeManifest(dir, final);
    const report = await writeReport(dir, final);
    return {
      manifest: final,
      table: formatSummaryTable(results),
      reused: runner.reused,
      ran: runner.ran,
      report,
    };
  } finally {
    await resources.dispose();
  }
}

/** Fingerprints an earlier manifest recorded, with output paths made relative to the working folder. */
function knownFingerprints(previous: Manifest | null, dir: string): FileFingerprint[] {
  if (!previous) return [];
  const known: FileFingerprint[] = [
    previous.inputs?.model,
    ...(previous.inputs?.calibData ?? []),
    ...(previous.inputs?.evalData ?? []),
  ]
    .filter((f): f is FileFingerprint => f !== undefined);
  for (const record of Object.values(previous.steps)) {
    known.push(...Object.values(record.inputs ?? {}));
    for (const [name, f] of Object.entries(record.outputs ?? {})) {
      known.push({ ...f, path: join(dir, name) });
    }
  }
  return known;
}

/**
 * Fills in default data when none was given. A model with a tokenizer gets the npm
 * corpus. Without a tokenizer the lists stay empty, so streams are sampled from the model.
 */
function withDefaultData(
  o: ResolvedPipelineOptions,
  hasTokenizer: boolean,
): ResolvedPipelineOptions {
  if (!hasTokenizer) return o;
  return {
    ...o,
    calibData: o.calibData.length ? o.calibData : [CORPUS_DATA],
    evalData: o.evalData.length ? o.evalData : [CORPUS_DATA],
  };
}

/** Data entries that are files, whose contents the manifest fingerprints. */
function dataFiles(data: string[]): string[] {
  return data.filter((f) => f !== CORPUS_DATA);
}
