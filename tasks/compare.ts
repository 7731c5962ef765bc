/**
 * `deno task compare`: calibrate a model, quantize it with every method at several target
 * bit widths, evaluate each result against the full model on held-out tokens, and write
 * the Markdown table.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { checkOutputPath } from "../src/util/output_path.ts";
import { GpuContext } from "../src/gpu/device.ts";
import { compareQuantizers, type CompareRow, DEFAULT_COMPARE_CTX } from "../src/eval/compare.ts";
import { formatCompareTable } from "../src/eval/compare_table.ts";
import { ENGINES, parseEngine } from "../src/eval/engine.ts";
import { type GpuUse, QUANT_METHODS, type QuantMethod } from "../src/quantize/types.ts";
import { CODEBOOK_SCOPES } from "../src/quantize/scope.ts";
import { writeTextFileAtomic } from "../src/util/atomic_write.ts";
import { UsageError } from "../src/errors.ts";
import {
  MODEL_DEFAULT_HELP,
  oneOf,
  optionalNumber,
  optionalOneOf,
  parseNumber,
  REFERENCE_MODEL,
} from "./_args.ts";

const HELP = `Usage: deno task compare [--model PATH] --out FILE.md [options]

Calibrates on a stream sampled from the model (--calib-seed), quantizes with each method at
each target, and evaluates every quantized model against the full model on a held-out
stream sampled with another seed (--eval-seed): perplexity, mean and 99th-percentile KL
divergence, top-1 agreement, achieved bpw and quantization time. Prints the Markdown table
and writes it to --out.

Options:
  --model PATH          Full-precision model (llama2.c .bin, GGUF, HF folder)
                        (${MODEL_DEFAULT_HELP})
  --out FILE            Markdown output file
  --methods LIST        Comma-separated methods (default ${QUANT_METHODS.join(",")})
  --bits LIST           Comma-separated target bits per weight (default 2,3,4)
  --calib-tokens N      Calibration tokens sampled from the model (default 4096)
  --calib-seed S        Seed of the calibration stream (default 1)
  --fisher FILE         Use this statistics file instead of calibrating
  --eval-tokens N       Held-out evaluation tokens (default 4096)
  --eval-seed S         Seed of the evaluation stream, different from --calib-seed (default 2)
  --ctx N               Evaluation window and calibration sequence length
                        (default: the model's context, at most ${DEFAULT_COMPARE_CTX})
  --vector-length V     Vector length of the VQ methods (default: the quantizer's)
  --codebook-scope S    Codebook sharing of the VQ methods: layer, block, type or model
                        (default layer)
  --group-size G        Columns per scale group of rtn and gptq (default: the quantizer's)
  --lambda L            EDSG weight of rsavq (default: the quantizer's)
  --quantize-seed S     Seed of k-means++ (default: the quantizer's)
  --tasks FILES         Multiple-choice JSONL task files, comma-separated or repeated: adds
                        zero-shot acc and acc_norm columns (see deno task eval --help)
  --engine E            Forward and backward engine: ${ENGINES.join(" | ")} (default gpu)
  --gpu MODE            Device use of k-means and assignment: auto | always | never (default auto)
  --work-dir DIR        Folder for the statistics file and quantized models (default: a temporary
                        folder, removed at the end)
  --keep                Keep the quantized models in --work-dir
  --json                Print the rows as JSON instead of the table (the file stays Markdown)
  --quiet               No progress on stderr
  --help                Show this help`;

function parse(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      out: { type: "string" },
      methods: { type: "string" },
      bits: { type: "string" },
      "calib-tokens": { type: "string", default: "4096" },
      "calib-seed": { type: "string", default: "1" },
      fisher: { type: "string" },
      "eval-tokens": { type: "string", default: "4096" },
      "eval-seed": { type: "string", default: "2" },
      ctx: { type: "string" },
      "vector-length": { type: "string" },
      "codebook-scope": { type: "string" },
      "group-size": { type: "string" },
      lambda: { type: "string" },
      "quantize-seed": { type: "string" },
      tasks: { type: "string", multiple: true },
      engine: { type: "string", default: "gpu" },
      gpu: { type: "string", default: "auto" },
      "work-dir": { type: "string" },
      keep: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return null;
  if (!values.out) {
    throw new UsageError("Missing --out: pass the Markdown file to write the table to");
  }
  if (values.keep && !values["work-dir"]) {
    throw new UsageError("--keep needs --work-dir: the default folder is temporary");
  }
  const gpuUse: GpuUse = oneOf("--gpu", values.gpu, ["auto", "always", "never"] as const);
  return {
    model: values.model,
    out: values.out,
    methods: values.methods === undefined ? undefined : parseMethods(values.methods),
    bits: values.bits === undefined
      ? undefined
      : values.bits.split(",").map((b) => parseNumber("--bits", b)),
    calibTokens: parseNumber("--calib-tokens", values["calib-tokens"], { integer: true, min: 1 }),
    calibSeed: parseNumber("--calib-seed", values["calib-seed"], { integer: true, min: 0 }),
    fisher: values.fisher,
    evalTokens: parseNumber("--eval-tokens", values["eval-tokens"], { integer: true, min: 2 }),
    evalSeed: parseNumber("--eval-seed", values["eval-seed"], { integer: true, min: 0 }),
    ctx: optionalNumber("--ctx", values.ctx, { integer: true }),
    quantize: {
      vectorLength: vectorLength(values["vector-length"]),
      codebookScope: optionalOneOf(
        "--codebook-scope",
        values["codebook-scope"],
        CODEBOOK_SCOPES,
      ),
      groupSize: optionalNumber("--group-size", values["group-size"], { integer: true, min: 1 }),
      lambda: optionalNumber("--lambda", values.lambda),
      seed: optionalNumber("--quantize-seed", values["quantize-seed"], { integer: true, min: 0 }),
    },
    choiceTasks: values.tasks?.flatMap((t) => t.split(",")).filter((t) => t !== ""),
    engine: parseEngine(values.engine),
    gpuUse,
    workDir: values["work-dir"],
    keep: values.keep,
    json: values.json,
    quiet: values.quiet,
  };
}

function parseMethods(list: string): QuantMethod[] {
  return list.split(",").map((m) => {
    const method = m.trim();
    if (!(QUANT_METHODS as readonly string[]).includes(method)) {
      throw new UsageError(
        `Invalid method ${JSON.stringify(method)} in --methods: expected ${
          QUANT_METHODS.join(", ")
        }`,
      );
    }
    return method as QuantMethod;
  });
}

function vectorLength(text: string | undefined): number | undefined {
  const length = optionalNumber("--vector-length", text, { integer: true, min: 1 });
  if (length !== undefined && ![2, 4, 6, 8].includes(length)) {
    throw new UsageError(`Invalid --vector-length ${length}: expected 2, 4, 6 or 8`);
  }
  return length;
}

async function run(args: NonNullable<ReturnType<typeof parse>>): Promise<void> {
  await checkOutputPath(args.out, [args.model, args.fisher, ...(args.choiceTasks ?? [])]);
  const workDir = args.workDir ?? await Deno.makeTempDir({ prefix: "rsavq-compare-" });
  if (args.workDir) await Deno.mkdir(workDir, { recursive: true });
  const needsGpu = args.engine === "gpu" || args.gpuUse !== "never";
  const gpu = needsGpu ? await GpuContext.create() : null;
  try {
    const result = await compareQuantizers({
      model: args.model,
      methods: args.methods,
      bits: args.bits,
      calibTokens: args.calibTokens,
      calibSeed: args.calibSeed,
      fisher: args.fisher,
      evalTokens: args.evalTokens,
      evalSeed: args.evalSeed,
      ctx: args.ctx,
      engine: args.engine,
      gpu,
      gpuUse: args.gpuUse,
      workDir,
      keepModels: args.keep,
      quantize: args.quantize,
      choiceTasks: args.choiceTasks,
      quiet: args.quiet,
      onRow: (row) => {
        if (!args.quiet) console.error(describeRow(row));
      },
    });
    const machine =
      `${navigator.hardwareConcurrency} CPU threads, Deno ${Deno.version.deno} on ${Deno.build.target}` +
      (gpu ? `, WebGPU adapter ${gpu.adapterName}` : "");
    const command = ["deno task compare", ...Deno.args.map(quoteArg)].join(" ");
    const table = formatCompareTable(result, { command, machine });
    await writeTextFileAtomic(args.out, table);
    console.log(args.json ? JSON.stringify(result) : table.trimEnd());
  } finally {
    gpu?.destroy();
    if (!args.workDir) await Deno.remove(workDir, { recursive: true }).catch(() => {});
  }
}

function describeRow(row: CompareRow): string {
  const name = row.targetBits === null ? row.method : `${row.method} at ${row.targetBits} bits`;
  if (!row.result) return `${name}: failed: ${row.error}`;
  const kld = row.result.kld_mean === undefined ? "" : `, KL ${row.result.kld_mean.toFixed(4)}`;
  const bpw = row.bpw === null ? "" : `, ${row.bpw.toFixed(3)} bpw`;
  const acc = row.zeroShot ? `, zero-shot acc ${(100 * row.zeroShot.acc).toFixed(1)}%` : "";
  return `${name}: ppl ${row.result.ppl.toFixed(3)}${kld}${bpw}${acc}`;
}

function quoteArg(arg: string): string {
  return /^[\w./,=:-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
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
