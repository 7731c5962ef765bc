/**
 * `deno task eval`: perplexity of a model on token data and, with --ref, the KL
 * divergence of its next-token distribution from a reference model's.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { loadModel } from "../src/model/load.ts";
import type { LoadedModel } from "../src/model/model.ts";
import type { CausalLM } from "../src/model/causal_lm.ts";
import { readTokenFile } from "../src/data/token_files.ts";
import { sampleTokenStream } from "../src/data/sample_stream.ts";
import { checkContextLength, type EvalResult, evaluate } from "../src/eval/evaluate.ts";
import { createCausalLM, ENGINES, parseEngine } from "../src/eval/engine.ts";
import { Progress } from "../src/util/progress.ts";
import { GpuContext } from "../src/gpu/device.ts";
import { openQuantizedModel } from "../src/formats/quantized.ts";
import { UsageError } from "../src/errors.ts";

const HELP =
  `Usage: deno task eval --model PATH (--data FILE... | --sample-tokens N [--seed S]) [options]

Measures perplexity over non-overlapping windows of --ctx tokens, each starting at
position 0 with an empty KV cache, and with --ref the KL divergence KL(P_ref || P_model),
its 99th percentile and top-1 agreement on the same tokens.

Options:
  --model PATH         Model to evaluate (llama2.c .bin, GGUF, quantized .safetensors, HF folder)
  --data FILE          Data file, repeatable: .json token-id array, .bin/.u32 raw little-endian
                       uint32 ids, or any other extension as UTF-8 text (needs a tokenizer)
  --sample-tokens N    Evaluate on N tokens sampled from the model (from --ref when given),
                       in windows of --ctx that each start with BOS
  --seed S             Seed of the sampled stream (default 1)
  --ctx N              Window length in tokens, 2..the model's context (default: the context)
  --ref PATH           Reference model (usually the full-precision one) for KL divergence
  --engine E           Forward engine: ${ENGINES.join(" | ")} (default gpu)
  --json               Print one JSON object instead of a summary
  --quiet              No progress on stderr
  --help               Show this help`;

interface EvalArgs {
  model: string;
  data: string[];
  sampleTokens?: number;
  seed: number;
  ctx?: number;
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
      model: { type: "string" },
      data: { type: "string", multiple: true },
      "sample-tokens": { type: "string" },
      seed: { type: "string", default: "1" },
      ctx: { type: "string" },
      ref: { type: "string" },
      engine: { type: "string", default: "gpu" },
      json: { type: "boolean", default: false },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return null;
  if (!values.model) {
    throw new UsageError("Missing --model: pass the checkpoint to evaluate (see --help)");
  }
  const data = values.data ?? [];
  const sampleTokens = values["sample-tokens"] === undefined
    ? undefined
    : integer("--sample-tokens", values["sample-tokens"], 1);
  if ((data.length > 0) === (sampleTokens !== undefined)) {
    throw new UsageError("Pass exactly one of --data FILE or --sample-tokens N");
  }
  return {
    model: values.model,
    data,
    sampleTokens,
    seed: integer("--seed", values.seed, 0),
    ctx: values.ctx === undefined ? undefined : integer("--ctx", values.ctx, -Infinity),
    ref: values.ref,
    engine: values.engine,
    json: values.json,
    quiet: values.quiet,
  };
}

function integer(flag: string, text: string, min: number): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new UsageError(
      `Invalid ${flag} ${JSON.stringify(text)}: expected an integer${
        min > -Infinity ? ` >= ${min}` : ""
      }`,
    );
  }
  return value;
}

async function run(args: EvalArgs): Promise<void> {
  const engine = parseEngine(args.engine);
  const opened: LoadedModel[] = [];
  const models: CausalLM[] = [];
  let gpu: GpuContext | null = null;
  try {
    const model = await loadModel(args.model);
    opened.push(model);
    const refModel = args.ref ? await loadModel(args.ref) : undefined;
    if (refModel) opened.push(refModel);

    // validate the window and vocabulary before reading any weights
    const ctx = args.ctx ?? model.config.maxSeqLen;
    checkContextLength(ctx, model.config, args.model);
    if (refModel) {
      checkContextLength(ctx, refModel.config, args.ref!);
      if (refModel.config.vocabSize !== model.config.vocabSize) {
        throw new UsageError(
          `${args.ref} has a vocabulary of ${refModel.config.vocabSize} but ${args.model} has ${model.config.vocabSize}: --ref must use the same tokenizer`,
        );
      }
    }
    const documents = await readData(args, model, refModel);

    // one device serves both models; the KV caches only need one window
    if (engine === "gpu") gpu = await GpuContext.create();
    const lmOptions = { gpu: gpu ?? undefined, contextLength: ctx, progress: !args.quiet };
    const lm = await createCausalLM(model, engine, lmOptions);
    models.push(lm);
    const ref = refModel ? await createCausalLM(refModel, engine, lmOptions) : undefined;
    if (ref) models.push(ref);

    let tokens = documents;
    if (args.sampleTokens !== undefined) {
      // a quantized model is judged on text from the full model, so sample from --ref
      const progress = new Progress("sample", args.sampleTokens, {
        quiet: args.quiet,
        unit: "tokens",
      });
      tokens = [
        await sampleTokenStream(ref ?? lm, {
          tokens: args.sampleTokens,
          windowLength: ctx,
          seed: args.seed,
          progress,
        }),
      ];
      progress.finish();
    }

    const total = tokens.reduce((sum, doc) => sum + doc.length, 0);
    const progress = new Progress("eval", total, { quiet: args.quiet, unit: "tokens" });
    const started = performance.now();
    const result = await evaluate(lm, tokens, { ctx, ref, progress });
    progress.finish();
    const seconds = (performance.now() - started) / 1000;
    const fileBytes = await checkpointBytes(args.model);
    const quantization = model.format === "quantized" ? await quantizationSummary(args.model) : {};

    const report = {
      model: args.model,
      ref: args.ref ?? null,
      engine,
      data: args.sampleTokens !== undefined
        ? `sampled from ${args.ref ? "ref" : "model"}, seed ${args.seed}`
        : args.data,
      ...result,
      ...quantization,
      file_bytes: fileBytes,
      seconds: round(seconds, 3),
    };
    console.log(args.json ? JSON.stringify(report) : summary(report, result));
  } finally {
    for (const m of models) m.dispose();
    gpu?.destroy();
    for (const m of opened) m.weights.close();
  }
}

async function readData(
  args: EvalArgs,
  model: LoadedModel,
  refModel: LoadedModel | undefined,
): Promise<Int32Array[]> {
  const documents: Int32Array[] = [];
  const tokenizer = model.tokenizer ?? refModel?.tokenizer ?? null;
  for (const path of args.data) {
    documents.push(...await readTokenFile(path, { vocabSize: model.config.vocabSize, tokenizer }));
  }
  return documents;
}

/** Report fields the human-readable summary shows besides the {@linkcode EvalResult}. */
interface SummaryFields {
  model: string;
  ref: string | null;
  engine: string;
  data: string | string[];
  method?: string;
  target_bpw?: number;
  bpw?: number;
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

function summary(report: SummaryFields, r: EvalResult): string {
  const data = Array.isArray(report.data) ? report.data.join(", ") : report.data;
  const pplError = (r.ppl * r.nll_stderr).toFixed(4);
  const lines = [
    `model    ${report.model} (${report.engine} engine)`,
    `data     ${data}: ${r.windows} windows of up to ${r.ctx} tokens`,
    `ppl      ${r.ppl.toFixed(4)} ± ${pplError}   (nll ${
      r.nll.toFixed(5)
    } nats/token over ${r.tokens} tokens)`,
  ];
  if (report.bpw !== undefined) {
    lines.push(
      `quant    ${report.method} at ${report.bpw.toFixed(4)} bpw (target ${report.target_bpw})`,
    );
  }
  if (report.ref !== null && r.kld_mean !== undefined) {
    const kld = [
      `mean ${r.kld_mean.toFixed(6)} ± ${r.kld_stderr!.toFixed(6)}`,
      `median ${r.kld_median!.toFixed(6)}`,
      `p99 ${r.kld_p99!.toFixed(6)}`,
      `max ${r.kld_max!.toFixed(6)}`,
    ];
    const top1 = `${(100 * r.top1_agreement!).toFixed(2)}% ± ${(100 * r.top1_stderr!).toFixed(2)}%`;
    lines.push(
      `ref      ${report.ref}: ppl ${r.ref_ppl!.toFixed(4)}`,
      `KLD      ${kld.join("   ")}`,
      `top-1    ${top1} agreement with the reference`,
    );
  }
  return lines.join("\n");
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
