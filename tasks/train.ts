/**
 * `deno task train`: train a byte-level BPE tokenizer and a Llama model from scratch on
 * public-domain npm text or text files, and write a Hugging Face directory.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { trainModel, type TrainModelOptions } from "../src/train/train_model.ts";
import { GpuGradientEngine } from "../src/train/gpu_gradient_engine.ts";
import { GpuContext } from "../src/gpu/device.ts";
import { UsageError } from "../src/errors.ts";
import { parseNumber } from "./_args.ts";

const HELP = `Usage: deno task train --out DIR [options]

Trains a tokenizer and a Llama-architecture model, then writes DIR as a Hugging Face
directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a
chat template, README.md model card). Work files and the resumable checkpoint go to
DIR.work/; progress, losses and held-out perplexity go to stderr.

Options:
  --data-source SRC   "npm" (public-domain npm corpus) or text files, repeatable (default npm)
  --vocab-size N      BPE vocabulary size incl. <|endoftext|> (default 4096)
  --dim D             d_model, keep a multiple of 256 for llama.cpp comparisons (default 256)
  --layers L          transformer blocks (default 4)
  --heads H           query heads (default 4)
  --kv-heads K        key/value heads, dividing H (default 4)
  --hidden F          SwiGLU hidden size, keep a multiple of 256 (default 768)
  --seq-len T         tokens per training window incl. BOS; the model's context (default 128)
  --batch B           windows per optimizer step (default 8)
  --steps S           optimizer steps (default 1000)
  --lr LR             peak learning rate (default 0.003)
  --warmup W          linear warmup steps (default 50)
  --weight-decay WD   AdamW decoupled weight decay on matrices (default 0.1)
  --clip C            global gradient-norm limit, 0 to disable (default 1)
  --seed S            seed of initialisation and batching (default 1)
  --eval-every N      held-out loss and checkpoint every N steps (default 100)
  --eval-windows N    held-out windows per periodic check (default 16)
  --final-eval-windows N  held-out windows of the final perplexity (default 256)
  --dtype T           stored weight type: f32, f16 or bf16 (default f32; f16 halves the file)
  --engine E          gpu (WebGPU backward pass) or reference (f64 TypeScript) (default gpu)
  --resume            continue from DIR.work/checkpoint.safetensors
  --out DIR           output directory (must not exist)
  --quiet             print nothing
  -h, --help          show this help`;

/** Parsed command line: the library's options plus the engine choice. */
type Args = TrainModelOptions & { engine: "gpu" | "reference" };

function parseCommandLine(argv: string[]): Args | null {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      "data-source": { type: "string", multiple: true },
      "vocab-size": { type: "string", default: "4096" },
      dim: { type: "string", default: "256" },
      layers: { type: "string", default: "4" },
      heads: { type: "string", default: "4" },
      "kv-heads": { type: "string", default: "4" },
      hidden: { type: "string", default: "768" },
      "seq-len": { type: "string", default: "128" },
      batch: { type: "string", default: "8" },
      steps: { type: "string", default: "1000" },
      lr: { type: "string", default: "0.003" },
      warmup: { type: "string", default: "50" },
      "weight-decay": { type: "string", default: "0.1" },
      clip: { type: "string", default: "1" },
      seed: { type: "string", default: "1" },
      "eval-every": { type: "string", default: "100" },
      "eval-windows": { type: "string", default: "16" },
      "final-eval-windows": { type: "string", default: "256" },
      engine: { type: "string", default: "gpu" },
      dtype: { type: "string", default: "f32" },
      resume: { type: "boolean", default: false },
      out: { type: "string" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return null;
  if (!values.out) throw new UsageError("Missing --out: pass the output directory (see --help)");
  const sources = values["data-source"] ?? ["npm"];
  if (sources.includes("npm") && sources.length > 1) {
    throw new UsageError(
      `Invalid --data-source: "npm" cannot be combined with files, got ${sources.join(", ")}`,
    );
  }
  const engine = values.engine;
  if (engine !== "gpu" && engine !== "reference") {
    throw new UsageError(`Invalid --engine ${engine}: expected gpu or reference`);
  }
  const dtype = values.dtype;
  if (dtype !== "f32" && dtype !== "f16" && dtype !== "bf16") {
    throw new UsageError(`Invalid --dtype ${dtype}: expected f32, f16 or bf16`);
  }
  const int = (flag: string, min: number) =>
    parseNumber(`--${flag}`, values[flag as keyof typeof values] as string, { integer: true, min });
  const num = (flag: string, min: number) =>
    parseNumber(`--${flag}`, values[flag as keyof typeof values] as string, { min });
  // Shape errors surface here, before the tokenizer is trained.
  const dim = int("dim", 2), heads = int("heads", 1), kvHeads = int("kv-heads", 1);
  if (dim % heads !== 0 || (dim / heads) % 2 !== 0) {
    throw new UsageError(
      `Invalid --dim ${dim} with --heads ${heads}: the head width dim/heads must be an even integer`,
    );
  }
  if (heads % kvHeads !== 0) {
    throw new UsageError(`Invalid --kv-heads ${kvHeads}: it must divide --heads ${heads}`);
  }
  return {
    dataSource: sources[0] === "npm" ? "npm" : sources,
    vocabSize: int("vocab-size", 258),
    dim,
    layers: int("layers", 1),
    heads,
    kvHeads,
    hidden: int("hidden", 1),
    seqLen: int("seq-len", 2),
    batchSize: int("batch", 1),
    steps: int("steps", 1),
    lr: parseNumber("--lr", values.lr, { greaterThan: 0 }),
    warmup: int("warmup", 0),
    weightDecay: num("weight-decay", 0),
    clip: num("clip", 0),
    seed: int("seed", 0),
    evalEvery: int("eval-every", 0),
    evalWindows: int("eval-windows", 1),
    finalEvalWindows: int("final-eval-windows", 1),
    resume: values.resume,
    out: values.out,
    quiet: values.quiet,
    engine,
    dtype,
  };
}

async function main(): Promise<void> {
  const options = parseCommandLine(Deno.args);
  if (!options) {
    console.log(HELP);
    return;
  }
  const gpu = options.engine === "gpu" ? await GpuContext.create() : null;
  let r;
  try {
    r = await trainModel({
      ...options,
      createEngine: gpu
        ? (config, params) => GpuGradientEngine.create(gpu, config, params)
        : undefined,
    });
  } finally {
    gpu?.destroy();
  }
  if (!options.quiet && r.heldOut) {
    console.error(
      `wrote ${options.out}: ${r.step} steps, ${
        r.tokensPerSecond.toFixed(1)
      } tokens/s, held-out perplexity ${Math.exp(r.heldOut.loss).toFixed(2)}`,
    );
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
