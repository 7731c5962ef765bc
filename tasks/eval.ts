/**
 * `deno task eval`: perplexity of a model on token data and, with --ref, the KL
 * divergence of its next-token distribution from a reference model's. With --tasks it
 * measures zero-shot multiple-choice accuracy instead.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { loadModel } from "../src/model/load.ts";
import type { LoadedModel } from "../src/model/model.ts";
import type { CausalLM } from "../src/model/causal_lm.ts";
import { capDocuments, readCorpusTokens, readTokenFile } from "../src/data/token_files.ts";
import { CORPUS_DATA } from "../src/data/corpus.ts";
import { sampleTokenStream } from "../src/data/sample_stream.ts";
import { readChoiceTasks } from "../src/data/choice_tasks.ts";
import { checkContextLength, evaluate } from "../src/eval/evaluate.ts";
import {
  type ChoiceModelResult,
  evaluateChoiceTasks,
  type LengthUnit,
} from "../src/eval/zero_shot.ts";
import { createCausalLM, ENGINES, parseEngine } from "../src/eval/engine.ts";
import { formatChoiceSummary, formatPerplexitySummary } from "../src/eval/eval_summary.ts";
import { Progress } from "../src/util/progress.ts";
import { GpuContext } from "../src/gpu/device.ts";
import { openQuantizedModel } from "../src/formats/quantized.ts";
import { UsageError } from "../src/errors.ts";
import {
  MODEL_DEFAULT_HELP,
  oneOf,
  optionalNumber,
  parseNumber,
  REFERENCE_MODEL,
} from "./_args.ts";

const HELP =
  `Usage: deno task eval [--model PATH] (--data FILE... | --sample-tokens N [--seed S] | --tasks FILE,...) [options]

Perplexity (--data, --sample-tokens): non-overlapping windows of --ctx tokens, each
starting at position 0 with an empty KV cache; with --ref also the KL divergence
KL(P_ref || P_model), its 99th percentile and top-1 agreement on the same tokens.
Zero-shot (--tasks): each choice scored by the summed log-likelihood of its tokens given
the context; acc and acc_norm per task and averaged, and with --ref the paired difference.

Options:
  --model PATH         Model to evaluate (llama2.c .bin, GGUF, quantized .safetensors, HF folder)
                       (${MODEL_DEFAULT_HELP})
  --data FILE          Data file, repeatable: .json token-id array, .bin/.u32 raw little-endian
                       uint32 ids, or any other extension as UTF-8 text (needs a tokenizer).
                       "corpus" reads the whole held-out part of the npm corpus (Moby Dick,
                       State of the Union addresses), which the reference model never saw;
                       the pipeline scores a sample of it instead. ./corpus names a file
  --eval-tokens N      Score at most N tokens of --data: for corpus, a sample of N tokens
                       from many held-out documents in an order set by --seed; for files,
                       the first N tokens
  --sample-tokens N    Evaluate on N tokens sampled from the model (from --ref when given),
                       in windows of --ctx that each start with BOS
  --seed S             Seed of the sampled stream or of the corpus sample (default 1)
  --ctx N              Window length in tokens, 2..the model's context (default: the context)
  --tasks FILES        Multiple-choice JSONL task files, comma-separated or repeated (native,
                       PIQA, ARC, HellaSwag and WinoGrande layouts, detected per line)
  --skip-invalid       Skip malformed task lines (listed on stderr) instead of stopping
  --add-bos            Prepend BOS to every task context (default: as lm-evaluation-harness, none)
  --length-unit U      acc_norm divisor of text choices: bytes | chars (default bytes)
  --samples            With --json and --tasks, include every question's scores
  --ref PATH           Reference model (usually the full-precision one) to compare with
  --engine E           Forward engine: ${ENGINES.join(" | ")} (default gpu)
  --json               Print one JSON object instead of a summary
  --quiet              No progress on stderr
  --help               Show this help`;

interface EvalArgs {
  model: string;
  data: string[];
  sampleTokens?: number;
  evalTokens?: number;
  seed: number;
  ctx?: number;
  tasks: string[];
  skipInvalid: boolean;
  addBos: boolean;
  lengthUnit: LengthUnit;
  samples: boolean;
  ref?: string;
  engine: string;
  json: boolean;
  quiet: boolean;
}

function parse(argv: string[]): EvalArgs | null {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      data: { type: "string", multiple: true },
      "sample-tokens": { type: "string" },
      "eval-tokens": { type: "string" },
      seed: { type: "string", default: "1" },
      ctx: { type: "string" },
      tasks: { type: "string", multiple: true },
      "skip-invalid": { type: "boolean", default: false },
      "add-bos": { type: "boolean", default: false },
      "length-unit": { type: "string", default: "bytes" },
      samples: { type: "boolean", default: false },
      ref: { type: "string" },
      engine: { type: "string", default: "gpu" },
      json: { type: "boolean", default: false },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return null;
  const data = values.data ?? [];
  const tasks = (values.tasks ?? []).flatMap((t) => t.split(",")).filter((t) => t !== "");
  const sampleTokens = optionalNumber("--sample-tokens", values["sample-tokens"], {
    integer: true,
    min: 1,
  });
  const evalTokens = optionalNumber("--eval-tokens", values["eval-tokens"], {
    integer: true,
    min: 2,
  });
  if (evalTokens !== undefined && data.length === 0) {
    throw new UsageError("--eval-tokens caps --data: pass --data FILE or --data corpus with it");
  }
  const modes =
    [data.length > 0, sampleTokens !== undefined, tasks.length > 0].filter(Boolean).length;
  if (modes !== 1) {
    throw new UsageError("Pass exactly one of --data FILE, --sample-tokens N or --tasks FILE");
  }
  const lengthUnit = oneOf("--length-unit", values["length-unit"], ["bytes", "chars"] as const);
  return {
    model: values.model,
    data,
    sampleTokens,
    evalTokens,
    seed: parseNumber("--seed", values.seed, { integer: true, min: 0 }),
    ctx: optionalNumber("--ctx", values.ctx, { integer: true }),
    tasks,
    skipInvalid: values["skip-invalid"],
    addBos: values["add-bos"],
    lengthUnit,
    samples: values.samples,
    ref: values.ref,
    engine: values.engine,
    json: values.json,
    quiet: values.quiet,
  };
}

/** Models and device of one run, released together. */
interface Session {
  model: LoadedModel;
  refModel?: LoadedModel;
  gpu: GpuContext | null;
  lms: CausalLM[];
}

async function run(args: EvalArgs): Promise<void> {
  const engine = parseEngine(args.engine);
  const session: Session = { model: await loadModel(args.model), gpu: null, lms: [] };
  try {
    if (args.ref) session.refModel = await loadModel(args.ref);
    const { model, refModel } = session;
    if (refModel && refModel.config.vocabSize !== model.config.vocabSize) {
      throw new UsageError(
        `${args.ref} has a vocabulary of ${refModel.config.vocabSize} but ${args.model} has ` +
          `${model.config.vocabSize}: --ref must use the same tokenizer`,
      );
    }
    if (args.tasks.length > 0) await runChoiceTasks(args, session, engine);
    else await runPerplexity(args, session, engine);
  } finally {
    for (const lm of session.lms) lm.dispose();
    session.gpu?.destroy();
    session.model.weights.close();
    session.refModel?.weights.close();
  }
}

/** Creates the model and the reference on `engine`, sharing one device. */
async function createModels(
  session: Session,
  engine: "gpu" | "reference",
  contextLength: number | undefined,
  quiet: boolean,
): Promise<{ lm: CausalLM; ref?: CausalLM }> {
  if (engine === "gpu") session.gpu = await GpuContext.create();
  const options = { gpu: session.gpu ?? undefined, contextLength, progress: !quiet };
  const lm = await createCausalLM(session.model, engine, options);
  session.lms.push(lm);
  if (!session.refModel) return { lm };
  const ref = await createCausalLM(session.refModel, engine, options);
  session.lms.push(ref);
  return { lm, ref };
}

async function runPerplexity(
  args: EvalArgs,
  session: Session,
  engine: "gpu" | "reference",
): Promise<void> {
  const { model, refModel } = session;

  // validate the window and the data before reading any weights
  const ctx = args.ctx ?? model.config.maxSeqLen;
  checkContextLength(ctx, model.config, args.model);
  if (refModel) checkContextLength(ctx, refModel.config, args.ref!);
  const tokenizer = model.tokenizer ?? refModel?.tokenizer ?? null;
  let tokens: Int32Array[] = [];
  const vocabSize = model.config.vocabSize;
  for (const path of args.data) {
    tokens.push(
      ...path === CORPUS_DATA
        ? await readCorpusTokens({
          part: "held-out",
          vocabSize,
          tokenizer,
          tokens: args.evalTokens,
          seed: args.seed,
        })
        : await readTokenFile(path, { vocabSize, tokenizer }),
    );
  }
  if (args.evalTokens !== undefined) tokens = capDocuments(tokens, args.evalTokens);

  // the KV caches only need one window
  const { lm, ref } = await createModels(session, engine, ctx, args.quiet);
  if (args.sampleTokens !== undefined) {
    // a quantized model is judged on text from the full model, so sample from --ref
    const sampling = new Progress("sample", args.sampleTokens, {
      quiet: args.quiet,
      unit: "tokens",
    });
    const stream = await sampleTokenStream(ref ?? lm, {
      tokens: args.sampleTokens,
      windowLength: ctx,
      seed: args.seed,
      progress: sampling,
    });
    sampling.finish();
    tokens = [stream];
  }

  const total = tokens.reduce((sum, doc) => sum + doc.length, 0);
  const progress = new Progress("eval", total, { quiet: args.quiet, unit: "tokens" });
  const started = performance.now();
  const result = await evaluate(lm, tokens, { ctx, ref, progress });
  progress.finish();
  const seconds = (performance.now() - started) / 1000;

  const report = {
    model: args.model,
    ref: args.ref ?? null,
    engine,
    data: args.sampleTokens !== undefined
      ? `sampled from ${args.ref ? "ref" : "model"}, seed ${args.seed}`
      : args.data,
    ...result,
    ...(model.format === "quantized" ? await quantizationSummary(args.model) : {}),
    file_bytes: await checkpointBytes(args.model),
    // Bytes of weights resident on the GPU (packed codes for a quantized model).
    ...("weightBytes" in lm ? { weight_bytes: (lm as { weightBytes: number }).weightBytes } : {}),
    seconds: round(seconds, 3),
  };
  console.log(args.json ? JSON.stringify(report) : formatPerplexitySummary(report, result));
}

async function runChoiceTasks(
  args: EvalArgs,
  session: Session,
  engine: "gpu" | "reference",
): Promise<void> {
  // every task file is parsed before any weights are read, so a bad line costs nothing
  const { questions, invalid } = await readChoiceTasks(args.tasks, {
    skipInvalid: args.skipInvalid,
  });
  for (const error of invalid) console.error(`skipped: ${error.message}`);
  const tokenizer = session.model.tokenizer ?? session.refModel?.tokenizer ?? null;

  const { lm, ref } = await createModels(session, engine, undefined, args.quiet);
  const progress = new Progress("zero-shot", questions.length * (ref ? 2 : 1), {
    quiet: args.quiet,
    unit: "questions",
  });
  const started = performance.now();
  const result = await evaluateChoiceTasks(lm, tokenizer, questions, {
    ref,
    addBos: args.addBos,
    lengthUnit: args.lengthUnit,
    progress,
  });
  progress.finish();
  const seconds = (performance.now() - started) / 1000;

  if (!args.json) {
    console.log(formatChoiceSummary(args.model, result));
    return;
  }
  // per-question samples can be large, so they are printed only on request
  const scores = (r: ChoiceModelResult) => ({
    tasks: r.tasks,
    average: r.average,
    forwarded_tokens: r.forwarded_tokens,
    samples: args.samples ? r.samples : undefined,
  });
  console.log(JSON.stringify({
    model: args.model,
    ref: args.ref ?? null,
    engine,
    task_files: args.tasks,
    skipped_lines: invalid.length,
    ...scores(result),
    ref_scores: result.ref ? scores(result.ref) : undefined,
    comparison: result.comparison,
    seconds: round(seconds, 3),
  }));
}

/** Method, target and achieved bpw stored in a quantized model's metadata. */
async function quantizationSummary(
  path: string,
): Promise<{ method?: string; target_bpw?: number; bpw?: number }> {
  const file = await openQuantizedModel(path);
  file.file.close();
  const q = file.quantization;
  return {
    method: typeof q.method === "string" ? q.method : undefined,
    target_bpw: typeof q.targetBpw === "number" ? q.targetBpw : undefined,
    bpw: typeof q.bpw === "number" ? q.bpw : undefined,
  };
}

/** Bytes of the checkpoint on disk (all files of a folder), or null when unreadable. */
async function checkpointBytes(path: string): Promise<number | null> {
  try {
    const info = await Deno.stat(path);
    if (!info.isDirectory) return info.size;
    let total = 0;
    for await (const entry of Deno.readDir(path)) {
      if (entry.isFile) total += (await Deno.stat(`${path}/${entry.name}`)).size;
    }
    return total;
  } catch {
    return null;
  }
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

if (import.meta.main) {
  try {
    const args = parse(Deno.args);
    if (args === null) console.log(HELP);
    else await run(args);
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
