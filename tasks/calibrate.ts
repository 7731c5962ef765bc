/**
 * `deno task calibrate`: Fisher statistics of every linear layer of a model over
 * calibration data, written to one safetensors file (format in docs/fisher.md).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { checkOutputPath } from "../src/util/output_path.ts";
import { loadModel } from "../src/model/load.ts";
import type { LoadedModel } from "../src/model/model.ts";
import { createCausalLM, ENGINES, parseEngine } from "../src/eval/engine.ts";
import { type DataSpec, loadCalibrationData, validateDataSpec } from "../src/calibrate/data.ts";
import { createEngine } from "../src/calibrate/create_engine.ts";
import { calibrate, checkLabelSeed } from "../src/calibrate/calibrate.ts";
import type { FisherLabels } from "../src/calibrate/fisher_file.ts";
import { Progress } from "../src/util/progress.ts";
import { UsageError } from "../src/errors.ts";
import { MODEL_DEFAULT_HELP, optionalNumber, REFERENCE_MODEL } from "./_args.ts";
import { GpuContext } from "../src/gpu/device.ts";

/** Default tokens per sequence when --seq-len is absent, capped at the model's context. */
const DEFAULT_SEQ_LEN = 2048;

const HELP =
  `Usage: deno task calibrate [--model PATH] (--data FILE... | --sample-tokens N --seed S)
                           --out fisher.safetensors [options]

Runs each calibration sequence forward and backward through the model and writes, for
every linear layer L of every block: L.A = E[x x^T], L.G_diag = E[delta^2] (and L.G with
--full-g), L.grad_mean = E_s[g_s] and L.fisher_diag = E_s[g_s * g_s], where delta is the
gradient of the sequence's mean next-token cross-entropy with respect to the layer output
and g_s = sum_t delta_t x_t^T. See docs/fisher.md.

Options:
  --model PATH         Model (llama2.c .bin, GGUF, Hugging Face folder)
                       (${MODEL_DEFAULT_HELP})
  --data FILE          Data file, repeatable: .json token-id array, .bin/.u32 raw little-endian
                       uint32 ids, any other extension as UTF-8 text (needs a tokenizer), or
                       with --chat JSONL conversations. "corpus" samples the training part
                       of the npm corpus (Moby Dick, State of the Union addresses) in chunks
                       ordered by --seed; it needs --sequences. ./corpus names a file
  --chat               Read every --data file as JSONL conversations ({"messages": [...]} a line)
                       rendered with the model's chat template
  --sample-tokens N    Calibrate on N tokens sampled from the model, in windows of --seq-len
                       that each start with BOS (needs --seed)
  --seed S             Seed of the sampled stream, or of the chunk order of --data corpus
  --seq-len L          Tokens per sequence, 2..the model's context (default ${DEFAULT_SEQ_LEN} or the context if smaller)
  --sequences K        Number of sequences (default: every full window of the data)
  --full-g             Also store the full output-gradient second moment G [out, out]
  --labels L           Labels backpropagated: data (the next tokens: empirical Fisher) or
                       model (drawn from the model's own distribution at each position,
                       seeded by --seed, default 0: true Fisher, the Hessian of the KL
                       divergence to the model) (default data)
  --out FILE           Output statistics file (.safetensors)
  --resume             Continue an interrupted run from FILE.partial
  --engine E           Backward engine: ${ENGINES.join(" | ")} (default gpu)
  --sample-engine E    Engine that samples --sample-tokens: ${
    ENGINES.join(" | ")
  } (default: --engine);
                       sampling decodes one token per step, so the reference is faster for tiny models
  --checkpoint-seconds S  Seconds between checkpoints to FILE.partial (default 60)
  --quiet              No progress on stderr
  --help               Show this help`;

interface CalibrateArgs {
  model: string;
  spec: Omit<DataSpec, "seqLen"> & { seqLen?: number };
  out: string;
  fullG: boolean;
  labels: FisherLabels;
  labelSeed: number;
  resume: boolean;
  engine: string;
  sampleEngine?: string;
  checkpointSeconds: number;
  quiet: boolean;
}

function parse(argv: string[]): CalibrateArgs | null {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      data: { type: "string", multiple: true },
      chat: { type: "boolean", default: false },
      "sample-tokens": { type: "string" },
      seed: { type: "string" },
      "seq-len": { type: "string" },
      sequences: { type: "string" },
      "full-g": { type: "boolean", default: false },
      labels: { type: "string", default: "data" },
      out: { type: "string" },
      resume: { type: "boolean", default: false },
      engine: { type: "string", default: "gpu" },
      "sample-engine": { type: "string" },
      "checkpoint-seconds": { type: "string", default: "60" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return null;
  if (!values.out) {
    throw new UsageError(
      "Missing --out: pass the statistics file to write, for example --out fisher.safetensors",
    );
  }
  const optionalInt = (flag: string, text: string | undefined, min: number) =>
    optionalNumber(flag, text, { integer: true, min });
  if (values.labels !== "data" && values.labels !== "model") {
    throw new UsageError(
      `Invalid --labels ${JSON.stringify(values.labels)}: expected data or model`,
    );
  }
  const seed = optionalInt("--seed", values.seed, 0);
  // Checked here as well as in calibrate(), so that a bad seed fails before any sampling.
  if (values.labels === "model" && seed !== undefined) {
    checkLabelSeed(seed, "--seed", " with --labels model");
  }
  return {
    model: values.model,
    spec: {
      files: values.data,
      chat: values.chat,
      sampleTokens: optionalInt("--sample-tokens", values["sample-tokens"], 1),
      seed,
      seqLen: optionalInt("--seq-len", values["seq-len"], 2),
      sequences: optionalInt("--sequences", values.sequences, 1),
    },
    out: values.out,
    fullG: values["full-g"],
    labels: values.labels,
    labelSeed: seed ?? 0,
    resume: values.resume,
    engine: values.engine,
    sampleEngine: values["sample-engine"],
    checkpointSeconds: Number(values["checkpoint-seconds"]),
    quiet: values.quiet,
  };
}

async function run(args: CalibrateArgs): Promise<void> {
  const engineName = parseEngine(args.engine);
  let sampleEngine: ReturnType<typeof parseEngine>;
  try {
    sampleEngine = parseEngine(args.sampleEngine ?? args.engine);
  } catch {
    throw new UsageError(
      `Invalid --sample-engine ${JSON.stringify(args.sampleEngine)}: expected gpu or reference`,
    );
  }
  if (!(args.checkpointSeconds > 0)) {
    throw new UsageError(
      `Invalid --checkpoint-seconds ${args.checkpointSeconds}: expected a positive number`,
    );
  }
  await checkOutputPath(args.out, [args.model, ...(args.spec.files ?? [])]);
  let model: LoadedModel | undefined;
  let gpu: GpuContext | undefined;
  try {
    model = await loadModel(args.model);
    const loaded = model;
    const spec: DataSpec = {
      ...args.spec,
      seqLen: args.spec.seqLen ?? Math.min(DEFAULT_SEQ_LEN, loaded.config.maxSeqLen),
    };
    validateDataSpec(loaded, spec);
    if (engineName === "gpu" || (sampleEngine === "gpu" && spec.sampleTokens !== undefined)) {
      gpu = await GpuContext.create();
    }
    const data = await loadCalibrationData(loaded, spec, {
      sampler: () => createCausalLM(loaded, sampleEngine, { gpu, contextLength: spec.seqLen }),
      progress: (total) => new Progress("sample", total, { quiet: args.quiet, unit: "tokens" }),
    });
    const engine = await createEngine(loaded, engineName, { gpu, fullG: args.fullG });
    // Ctrl-C finishes the current sequence and checkpoints, so --resume loses nothing.
    const abort = new AbortController();
    const onSignal = () => abort.abort();
    Deno.addSignalListener("SIGINT", onSignal);
    try {
      const result = await calibrate({
        model: loaded,
        data,
        engine,
        out: args.out,
        fullG: args.fullG,
        labels: args.labels,
        labelSeed: args.labelSeed,
        resume: args.resume,
        quiet: args.quiet,
        checkpointSeconds: args.checkpointSeconds,
        signal: abort.signal,
      });
      if (!result.complete) {
        console.error(
          `Interrupted after ${result.sequences} sequences: run again with --resume to finish ${args.out}`,
        );
        Deno.exitCode = 130;
        return;
      }
      if (!args.quiet) {
        console.error(
          `${args.out}: ${result.sequences} sequences of ${spec.seqLen} tokens, mean loss ${
            result.meanLoss.toFixed(4)
          } nats, ${result.tokensPerSecond.toFixed(0)} tokens/s`,
        );
      }
    } finally {
      Deno.removeSignalListener("SIGINT", onSignal);
      engine.dispose();
    }
  } finally {
    model?.weights.close();
    gpu?.destroy();
  }
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
