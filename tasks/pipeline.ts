/**
 * `deno task pipeline`: calibrate, allocate, quantize and evaluate a model in one
 * command, with a manifest, a report and a results table. A second run over the same
 * folder reuses every finished step.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { UsageError } from "../src/errors.ts";
import { MODEL_DEFAULT_HELP, optionalNumber, REFERENCE_MODEL } from "./_args.ts";
import { ENGINES, parseEngine } from "../src/eval/engine.ts";
import { parseMethodList, PIPELINE_DEFAULTS } from "../src/pipeline/options.ts";
import { runPipeline } from "../src/pipeline/run_pipeline.ts";
import type { CodebookScope } from "../src/quantize/scope.ts";
import type { DistortionKind } from "../src/allocate/allocate_bits.ts";
import { QUANT_METHODS, type QuantMethod } from "../src/quantize/types.ts";

const HELP = `Usage: deno task pipeline [--model PATH] --bits B[,B2...] --out DIR [options]

Runs calibrate -> allocate -> quantize -> eval and writes every step's file to DIR, with
DIR/manifest.json (inputs and their sha256, settings, versions, timings, results) and
DIR/report.html (charts and tables in one self-contained file). Running again with the
same DIR reuses each step whose inputs and settings are unchanged and redoes the rest.
Ends with a table: method, bpw, perplexity, KL divergence, top-1 agreement, file size,
quantize time. Embeddings, norms and the output head stay in 16 bits (F16), not counted
in bpw.

Options:
  --model PATH          Model to quantize (llama2.c .bin, GGUF, Hugging Face folder)
                        (${MODEL_DEFAULT_HELP})
  --bits B[,B2...]      Target bits per weight, overhead included; one run per value
  --method M            Main method: ${
  QUANT_METHODS.join(" | ")
} (default ${PIPELINE_DEFAULTS.method});
                        kmeans, vptq and rsavq follow a WCSG allocation plan
  --compare M[,M2...]   Baselines quantized at the same bits into the same table
  --calib-data FILE     Calibration data, repeatable (text, .json ids, .bin/.u32 ids), or
                        "corpus": the training part of the npm corpus (Moby Dick and the
                        State of the Union addresses). Default: corpus for a model with a
                        tokenizer, otherwise tokens sampled from the model with --seed
  --calib-tokens N      Calibration tokens: corpus sample or sampled stream size (default
                        ${PIPELINE_DEFAULTS.sampledTokens}), or a cap on --calib-data files
  --eval-data FILE      Evaluation data, repeatable, or "corpus": the corpus's held-out part.
                        Default: corpus with a tokenizer, otherwise sampled with --seed + 1
  --eval-tokens N       Evaluation tokens: corpus sample or sampled stream size (default
                        ${PIPELINE_DEFAULTS.sampledTokens}), or a cap on --eval-data files
  --seq-len L           Tokens per calibration sequence and evaluation window
                        (default ${PIPELINE_DEFAULTS.seqLen} or the model's context if smaller)
  --tasks FILE          Multiple-choice JSONL task file scored zero-shot on every model, repeatable
  --seed S              Seed of k-means and of the calibration data (corpus chunk order or
                        sampled stream); evaluation data uses S + 1 (default ${PIPELINE_DEFAULTS.seed})
  --engine E            Forward engine: ${ENGINES.join(" | ")} (default ${PIPELINE_DEFAULTS.engine})
  --groups G            Channel groups per layer in the allocation plan (default ${PIPELINE_DEFAULTS.groups})
  --vector-length V     Vector length of the vector-quantization methods (default ${PIPELINE_DEFAULTS.vectorLength})
  --scope S             Bit budget per layer or over the whole model: layer | model (default ${PIPELINE_DEFAULTS.scope})
  --codebook-scope S    Share VQ codebooks (main method and kmeans/vptq baselines) per
                        layer | block | type | model; the plan is allocated for it and counts
                        each shared codebook once (default ${PIPELINE_DEFAULTS.codebookScope},
                        layer with --scope layer)
  --distortion D        Distortion the WCSG plan is solved with: model (high-rate model) or
                        measured (trial quantizations at a few codebook sizes near the
                        choice; a few quantizations slower; needs --groups 1)
                        (default ${PIPELINE_DEFAULTS.distortion} with one group per layer, else model)
  --out DIR             Output folder
  --quiet               No progress on stderr
  --help                Show this help`;

function parse(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      bits: { type: "string" },
      method: { type: "string" },
      compare: { type: "string" },
      "calib-data": { type: "string", multiple: true },
      "calib-tokens": { type: "string" },
      "eval-data": { type: "string", multiple: true },
      "eval-tokens": { type: "string" },
      "seq-len": { type: "string" },
      tasks: { type: "string", multiple: true },
      seed: { type: "string" },
      engine: { type: "string", default: PIPELINE_DEFAULTS.engine },
      groups: { type: "string" },
      "vector-length": { type: "string" },
      scope: { type: "string" },
      "codebook-scope": { type: "string" },
      distortion: { type: "string" },
      out: { type: "string" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return null;
  if (!values.bits) {
    throw new UsageError(
      "Missing --bits: pass bits per weight, for example --bits 2 or --bits 2,3,4",
    );
  }
  if (!values.out) {
    throw new UsageError("Missing --out: pass the output folder, for example --out out");
  }
  const bits = values.bits.split(",").map((text) => {
    const b = Number(text);
    if (text.trim() === "" || !Number.isFinite(b) || b <= 0) {
      throw new UsageError(
        `Invalid --bits ${
          JSON.stringify(values.bits)
        }: expected positive numbers separated by commas`,
      );
    }
    return b;
  });
  const methods = values.method === undefined
    ? undefined
    : parseMethodList("--method", values.method);
  if (methods && methods.length !== 1) {
    throw new UsageError(
      `Invalid --method ${
        JSON.stringify(values.method)
      }: pass one method; list baselines with --compare`,
    );
  }
  return {
    model: values.model,
    out: values.out,
    bits,
    method: methods?.[0] as QuantMethod | undefined,
    compare: values.compare === undefined
      ? undefined
      : parseMethodList("--compare", values.compare),
    calibData: values["calib-data"],
    calibTokens: optionalNumber("--calib-tokens", values["calib-tokens"], { integer: true }),
    evalData: values["eval-data"],
    evalTokens: optionalNumber("--eval-tokens", values["eval-tokens"], { integer: true }),
    seqLen: optionalNumber("--seq-len", values["seq-len"], { integer: true }),
    choiceTasks: values.tasks,
    seed: optionalNumber("--seed", values.seed, { integer: true }),
    engine: parseEngine(values.engine),
    groups: optionalNumber("--groups", values.groups, { integer: true }),
    vectorLength: optionalNumber("--vector-length", values["vector-length"], { integer: true }),
    scope: values.scope as "layer" | "model" | undefined,
    codebookScope: values["codebook-scope"] as CodebookScope | undefined,
    distortion: values.distortion as DistortionKind | undefined,
    quiet: values.quiet,
  };
}

if (import.meta.main) {
  try {
    const options = parse(Deno.args);
    if (options === null) {
      console.log(HELP);
    } else {
      const result = await runPipeline(options);
      const total = result.reused.length + result.ran.length;
      console.log(
        result.ran.length === 0
          ? `All ${total} steps reused from ${options.out}/manifest.json (inputs and settings unchanged)`
          : `${result.ran.length} of ${total} steps ran, ${result.reused.length} reused: ${
            result.ran.join(", ")
          }`,
      );
      console.log(result.table);
      console.log(
        `Wrote ${options.out}/manifest.json and ${result.report}; embeddings, norms and head stay in 16 bits (F16), not counted in bpw`,
      );
    }
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
