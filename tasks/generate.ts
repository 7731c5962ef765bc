/**
 * `deno task generate`: sample a continuation of a prompt from a model, on WebGPU or
 * with the TypeScript reference.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { loadModel } from "../src/model/load.ts";
import { GpuContext } from "../src/gpu/device.ts";
import { GpuModel } from "../src/model/gpu_model.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { generate } from "../src/model/generate.ts";
import type { CausalLM } from "../src/model/causal_lm.ts";
import type { LoadedModel } from "../src/model/model.ts";
import { UsageError } from "../src/errors.ts";
import { MODEL_DEFAULT_HELP, parseNumber, REFERENCE_MODEL } from "./_args.ts";

const HELP = `Usage: deno task generate [--model PATH] (--prompt TEXT | --tokens IDS) [options]

Generates a continuation of a prompt. Text goes to stdout (token ids when the model has
no tokenizer); speeds go to stderr.

Options:
  --model PATH        llama2.c .bin, GGUF file, quantized .safetensors or Hugging Face directory
                      (${MODEL_DEFAULT_HELP})
  --prompt TEXT       prompt text, encoded with the model's tokenizer (BOS prepended)
  --tokens IDS        prompt as comma-separated token ids, e.g. 1 or 1,403,407
  --max-tokens N      most tokens to generate (default 256)
  --temperature T     softmax temperature, 0 for greedy (default 1)
  --top-p P           nucleus sampling mass in (0, 1] (default 0.9)
  --seed S            sampler seed, an integer (default 1)
  --engine E          gpu (WebGPU) or reference (TypeScript) (default gpu)
  --quiet             print no progress or speeds
  -h, --help          show this help`;

/** Parsed command line. */
interface Args {
  model: string;
  prompt?: string;
  tokens?: number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  engine: "gpu" | "reference";
  quiet: boolean;
}

function parseCommandLine(argv: string[]): Args | null {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      prompt: { type: "string" },
      tokens: { type: "string" },
      "max-tokens": { type: "string", default: "256" },
      temperature: { type: "string", default: "1" },
      "top-p": { type: "string", default: "0.9" },
      seed: { type: "string", default: "1" },
      engine: { type: "string", default: "gpu" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return null;
  if ((values.prompt === undefined) === (values.tokens === undefined)) {
    throw new UsageError("Pass exactly one of --prompt TEXT or --tokens IDS");
  }
  const topP = parseNumber("--top-p", values["top-p"], { greaterThan: 0, max: 1 });
  const engine = values.engine;
  if (engine !== "gpu" && engine !== "reference") {
    throw new UsageError(`Invalid --engine ${engine}: expected gpu or reference`);
  }
  return {
    model: values.model,
    prompt: values.prompt,
    tokens: values.tokens === undefined ? undefined : parseIds(values.tokens),
    maxTokens: parseNumber("--max-tokens", values["max-tokens"], { integer: true, min: 0 }),
    temperature: parseNumber("--temperature", values.temperature, { min: 0 }),
    topP,
    seed: parseNumber("--seed", values.seed, { integer: true }),
    engine,
    quiet: values.quiet,
  };
}

function parseIds(text: string): number[] {
  return text.split(",").map((part) => {
    const id = Number(part.trim());
    if (part.trim() === "" || !Number.isSafeInteger(id) || id < 0) {
      throw new UsageError(
        `Invalid --tokens ${
          JSON.stringify(text)
        }: expected comma-separated non-negative integers such as 1,403,407`,
      );
    }
    return id;
  });
}

function promptIds(model: LoadedModel, args: Args): number[] {
  if (args.tokens) return args.tokens;
  if (!model.tokenizer) {
    throw new UsageError(
      `${model.path} has no tokenizer, so --prompt cannot be encoded: pass token ids with --tokens (for example --tokens 1 for BOS)`,
    );
  }
  return model.tokenizer.encode(args.prompt!, { addBos: true });
}

async function main(): Promise<void> {
  const args = parseCommandLine(Deno.args);
  if (!args) {
    console.log(HELP);
    return;
  }
  const model = await loadModel(args.model);
  let gpu: GpuContext | null = null;
  let lm: CausalLM | null = null;
  try {
    const prompt = promptIds(model, args);
    if (args.engine === "gpu") {
      gpu = await GpuContext.create();
      lm = await GpuModel.create(gpu, model.config, model.weights, { progress: !args.quiet });
    } else {
      lm = await ReferenceModel.create(model.config, model.weights);
    }

    const tokenizer = model.tokenizer;
    const encoder = new TextEncoder();
    const write = (text: string) => Deno.stdout.writeSync(encoder.encode(text));
    const generated: number[] = [];
    let printed = "";
    const { stats } = await generate(lm, prompt, {
      maxTokens: args.maxTokens,
      temperature: args.temperature,
      topP: args.topP,
      seed: args.seed,
      stopIds: tokenizer?.eosIds ?? model.config.eosIds,
    }, (id) => {
      generated.push(id);
      if (!tokenizer) {
        write(`${generated.length > 1 ? " " : ""}${id}`);
        return;
      }
      // decode the whole continuation and print what is new, holding back an incomplete
      // character (U+FFFD at the end) until the next token completes it
      const text = tokenizer.decode(generated);
      if (text.endsWith("\uFFFD") || !text.startsWith(printed)) return;
      write(text.slice(printed.length));
      printed = text;
    });
    const rest = tokenizer ? tokenizer.decode(generated) : "";
    write(rest.startsWith(printed) ? `${rest.slice(printed.length)}\n` : "\n");
    if (!args.quiet) {
      console.error(
        `${args.engine}: prompt ${stats.promptTokens} tokens at ${
          stats.prefillTokensPerSecond.toFixed(1)
        } tokens/s, ` +
          `generated ${stats.generatedTokens} tokens at ${
            stats.decodeTokensPerSecond.toFixed(1)
          } tokens/s (stop: ${stats.stopReason})`,
      );
    }
  } finally {
    lm?.dispose();
    gpu?.destroy();
    model.weights.close();
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
