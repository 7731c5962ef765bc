/**
 * `deno run -A tasks/ablation.ts`: the RSAVQ ablation. At each budget it quantizes a model
 * with the rsavq method six ways and compares each with the full-precision model on
 * held-out tokens. The variants are plain Fisher-weighted VQ (lambda 0, one codebook per
 * layer), + EDSG (the error-direction term), + WCSG (an allocation plan of per-group
 * codebook sizes) and + both. A plan with one group per layer (which stores no channel
 * order) isolates WCSG's budget scope from its channel groups, and a plan whose group
 * counts the allocation searched shows whether fewer codebooks pay off. The output is a
 * Markdown table of perplexity and KL divergence with each row's bpw.
 *
 * @module
 */
import { join } from "node:path";
import { checkOutputPath } from "../src/util/output_path.ts";
import { parseArgs } from "node:util";
import { allocateBits, type AllocateOptions } from "../src/allocate/allocate_bits.ts";
import { openFisherStats } from "../src/allocate/fisher_source.ts";
import type { Plan, PlanScope } from "../src/allocate/plan.ts";
import { writePlan } from "../src/allocate/plan_io.ts";
import { sampleTokenStream } from "../src/data/sample_stream.ts";
import { UsageError } from "../src/errors.ts";
import { MODEL_DEFAULT_HELP, parseNumber, REFERENCE_MODEL } from "./_args.ts";
import { createCausalLM, ENGINES, parseEngine } from "../src/eval/engine.ts";
import { type EvalResult, evaluate } from "../src/eval/evaluate.ts";
import { loadModel } from "../src/model/load.ts";
import { quantizeModel } from "../src/quantize/quantize_model.ts";
import { openStatistics } from "../src/quantize/statistics.ts";
import { Progress } from "../src/util/progress.ts";

const HELP = `Usage: deno task ablation [--model PATH] --fisher FILE --out-dir DIR [options]

Quantizes the model with rsavq six ways at every --bits value and evaluates each one
against the full-precision model on held-out tokens sampled from it (seed --eval-seed,
which must differ from the calibration seed):
  plain VQ        Fisher-weighted VQ, lambda 0, one codebook per layer
  + EDSG          error-direction term with --lambda
  + WCSG          per-group codebook sizes from deno task allocate's method, lambda 0
  + both          WCSG plan and EDSG term
  WCSG, 1 group   a plan with one group per layer (no channel order stored): the
                  budget scope of WCSG without its channel groups
  + WCSG, searched groups   the plan with each layer's group count (1 to --groups)
                  chosen by the allocation (--search-groups)
Prints a Markdown table: rows with their bpw, perplexity, mean and 99th-percentile KL
divergence (nats per token) and top-1 agreement.

Options:
  --model PATH         Full-precision model (${MODEL_DEFAULT_HELP})
  --fisher FILE        Statistics from deno task calibrate
  --out-dir DIR        Folder for the plans and quantized files
  --bits LIST          Comma-separated budgets in bits per weight (default 2,3)
  --groups G           WCSG groups per layer (default 4)
  --vector-length V    Vector length (default 4)
  --scope S            WCSG budget scope: layer or model (default model)
  --lambda L           EDSG weight (default 0.05)
  --eval-tokens N      Held-out tokens (default 8192)
  --eval-seed S        Seed of the held-out stream (default 7)
  --ctx N              Window length (default 256)
  --engine E           Forward engine: ${ENGINES.join(" | ")} (default reference)
  --quiet              No progress on stderr
  --help               Show this help`;

interface Variant {
  name: string;
  edsg: boolean;
  /**
   * "none": one codebook per layer, no plan; "wcsg": the allocation plan; "searched": the
   * plan with each layer's group count searched; "single": a plan with one group per layer.
   */
  plan: "none" | "wcsg" | "searched" | "single";
}

const VARIANTS: Variant[] = [
  { name: "plain VQ", edsg: false, plan: "none" },
  { name: "+ EDSG", edsg: true, plan: "none" },
  { name: "+ WCSG", edsg: false, plan: "wcsg" },
  { name: "+ both", edsg: true, plan: "wcsg" },
  // One group per layer through the same plan and scope as WCSG, with no channel order:
  // separates the budget scope from the channel groups.
  { name: "WCSG, 1 group", edsg: false, plan: "single" },
  { name: "+ WCSG, searched groups", edsg: false, plan: "searched" },
];

interface Row {
  bits: number;
  variant: string;
  bpw: number;
  result: EvalResult;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      fisher: { type: "string" },
      "out-dir": { type: "string" },
      bits: { type: "string", default: "2,3" },
      groups: { type: "string", default: "4" },
      "vector-length": { type: "string", default: "4" },
      scope: { type: "string", default: "model" },
      lambda: { type: "string", default: "0.05" },
      "eval-tokens": { type: "string", default: "8192" },
      "eval-seed": { type: "string", default: "7" },
      ctx: { type: "string", default: "256" },
      engine: { type: "string", default: "reference" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return console.log(HELP);
  if (!values.fisher || !values["out-dir"]) {
    throw new UsageError("Missing --fisher or --out-dir (see --help)");
  }
  if (values.scope !== "layer" && values.scope !== "model") {
    throw new UsageError(
      `Invalid --scope ${JSON.stringify(values.scope)}: expected layer or model`,
    );
  }

  const budgets = values.bits.split(",").map((b) => parseNumber("--bits", b, { greaterThan: 0 }));
  const groups = parseNumber("--groups", values.groups, { integer: true, min: 1 });
  const vectorLength = parseNumber("--vector-length", values["vector-length"]);
  const lambda = parseNumber("--lambda", values.lambda);
  const ctx = parseNumber("--ctx", values.ctx, { integer: true, min: 1 });
  const engine = parseEngine(values.engine);
  const quiet = values.quiet;
  const outDir = values["out-dir"];
  if (![2, 4, 6, 8].includes(vectorLength)) {
    throw new UsageError(`Invalid --vector-length ${vectorLength}: expected 2, 4, 6 or 8`);
  }
  await checkOutputPath(outDir, [values.model, values.fisher], "--out-dir");
  await Deno.mkdir(outDir, { recursive: true });

  const model = await loadModel(values.model);
  const ref = await createCausalLM(model, engine);
  const sampling = new Progress(
    "sample held-out tokens",
    parseNumber("--eval-tokens", values["eval-tokens"], { integer: true, min: 1 }),
    { quiet, unit: "tokens" },
  );
  const heldOut = await sampleTokenStream(ref, {
    tokens: sampling.total,
    windowLength: ctx,
    seed: parseNumber("--eval-seed", values["eval-seed"], { integer: true, min: 1 }),
    progress: sampling,
  });
  sampling.finish();

  const rows: Row[] = [];
  const fullPrecision = await evaluate(ref, heldOut, { ctx });
  for (const bits of budgets) {
    const scope = values.scope as PlanScope;
    const plan = await makePlan(values.model, values.fisher, {
      bits,
      groups,
      vectorLength,
      scope,
      quiet,
    });
    await writePlan(join(outDir, `plan_${bits}.json`), plan);
    const single = await makePlan(values.model, values.fisher, {
      bits,
      groups: 1,
      vectorLength,
      scope,
      quiet,
    });
    await writePlan(join(outDir, `plan_${bits}_1group.json`), single);
    const searched = await makePlan(values.model, values.fisher, {
      bits,
      groups,
      vectorLength,
      scope,
      quiet,
      searchGroups: true,
    });
    await writePlan(join(outDir, `plan_${bits}_searched.json`), searched);
    for (const variant of VARIANTS) {
      const out = join(
        outDir,
        `rsavq_${bits}_${variant.name.replace(/[^a-z]+/gi, "_")}.safetensors`,
      );
      const plans = { none: null, wcsg: plan, single, searched };
      const stats = await openStatistics(values.fisher);
      const quantized = await quantizeModel(model, stats, {
        method: "rsavq",
        bits,
        out,
        vectorLength,
        plan: plans[variant.plan],
        lambda: variant.edsg ? lambda : 0,
        edsgMode: variant.edsg ? "projection" : "none",
        quiet,
        statisticsPath: values.fisher,
      });
      stats.close();
      const qModel = await loadModel(out);
      const lm = await createCausalLM(qModel, engine);
      const result = await evaluate(lm, heldOut, { ctx, ref });
      lm.dispose();
      qModel.weights.close();
      rows.push({ bits, variant: variant.name, bpw: quantized.bpw, result });
      if (!quiet) {
        console.error(
          `${bits} bits ${variant.name}: ${quantized.bpw.toFixed(4)} bpw, ppl ${
            result.ppl.toFixed(4)
          }, kld ${result.kld_mean!.toFixed(5)}`,
        );
      }
    }
  }
  ref.dispose();
  model.weights.close();
  console.log(
    table(rows, fullPrecision, {
      model: values.model,
      fisher: values.fisher,
      heldOut: heldOut.length,
      seed: values["eval-seed"],
      ctx,
      lambda,
      groups,
      scope: values.scope,
    }),
  );
}

async function makePlan(
  modelPath: string,
  fisher: string,
  options: AllocateOptions,
): Promise<Plan> {
  const model = await loadModel(modelPath);
  const stats = await openFisherStats(fisher);
  try {
    return await allocateBits(stats, model.weights, options);
  } finally {
    stats.close();
    model.weights.close();
  }
}

function table(rows: Row[], fp: EvalResult, info: Record<string, string | number>): string {
  const lines = [
    `Model ${info.model}, statistics ${info.fisher}; held-out: ${info.heldOut} tokens sampled from the full-precision model (seed ${info.seed}), windows of ${info.ctx}.`,
    `EDSG lambda ${info.lambda} (projection term); WCSG ${info.groups} groups per layer, budget scope ${info.scope}. Embeddings and output head unquantized and not counted.`,
    "",
    "| bits | variant | bpw | PPL | KLD mean | KLD p99 | top-1 agreement |",
    "| ---- | ------- | --- | --- | -------- | ------- | --------------- |",
    `| 32 | full precision | 32 | ${fp.ppl.toFixed(4)} | 0 | 0 | 1 |`,
    ...rows.map((r) =>
      `| ${r.bits} | ${r.variant} | ${r.bpw.toFixed(4)} | ${r.result.ppl.toFixed(4)} | ${
        r.result.kld_mean!.toFixed(5)
      } ± ${r.result.kld_stderr!.toFixed(5)} | ` +
      `${r.result.kld_p99!.toFixed(4)} | ${r.result.top1_agreement!.toFixed(4)} |`
    ),
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
