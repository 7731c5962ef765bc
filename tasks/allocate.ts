/**
 * `deno task allocate`: per-channel sensitivities from Fisher statistics and a plan of
 * codebook sizes per channel group that meets a bits-per-weight budget (format in
 * docs/plan.md).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { checkOutputPath } from "../src/util/output_path.ts";
import {
  allocateBits,
  type AllocateOptions,
  type TrialQuantization,
} from "../src/allocate/allocate_bits.ts";
import { GpuContext } from "../src/gpu/device.ts";
import type { LoadedModel } from "../src/model/model.ts";
import { openStatistics } from "../src/quantize/statistics.ts";
import { trialQuantization } from "../src/quantize/trial.ts";
import { DISTORTION_KINDS } from "../src/quantize/plan.ts";
import { explainPlan } from "../src/allocate/explain.ts";
import { openFisherStats } from "../src/allocate/fisher_source.ts";
import { writePlan } from "../src/allocate/plan_io.ts";
import { UsageError } from "../src/errors.ts";
import { MODEL_DEFAULT_HELP, oneOf, parseNumber, REFERENCE_MODEL } from "./_args.ts";
import { loadModel } from "../src/model/load.ts";
import { CODEBOOK_SCOPES } from "../src/quantize/scope.ts";

const HELP =
  `Usage: deno task allocate [--model PATH] --fisher FILE --bits B --out plan.json [options]

Gives every output channel of every block linear layer a sensitivity from the Fisher
statistics, sorts the channels by it, splits them into groups and picks each group's
codebook size K (a power of two; index rate log2(K)/v bits per weight) to minimize the
modelled loss sum I_c * 2^(-2 b_c) under the budget, or with --distortion measured the
Fisher-weighted error that trial quantizations leave. Bits per weight count every stored
byte: packed indices, f16 codebooks, an f16 scale per row and, for layers with several
groups, a channel order of ceil(log2 rows) bits per row.
Embeddings and the output head are not quantized and not counted.

Options:
  --model PATH          Model the statistics were computed on (llama2.c .bin, GGUF, Hugging Face folder)
                        (${MODEL_DEFAULT_HELP})
  --fisher FILE         Statistics file from deno task calibrate
  --bits B              Budget in bits per weight, overhead included (for example 2 or 3.5)
  --groups G            Channel groups, each with its own codebook, per layer (default 4)
  --search-groups       Try 1 to G groups per layer and keep the count with the least modelled
                        loss (fewer codebooks where their storage costs more than finer rates save)
  --vector-length V     Weights per vector along the input dimension (default 4)
  --scope S             layer: every layer meets the budget; model: the whole model does,
                        and sensitive layers may get more (default layer)
  --codebook-scope S    layer | block | type | model: share each group rank's codebook across
                        the layers of a block, a layer type or the model; its size is chosen
                        once and its bytes count once (needs --scope model; default layer).
                        Quantize the plan with the same scope
  --sensitivity S       trace: trace(F_c) * var(W_c); gradient: g_c^T F_c g_c, falling back to
                        trace where the mean gradient is noise; with --scope model or a shared
                        --codebook-scope one fallback turns every layer to trace (default trace)
  --fisher-kind F       kfac: F_cj = G_cc * A_jj; empirical: F_cj = E[g_s^2]_cj (default kfac)
  --distortion D        model: a codebook of 2^k leaves sum(I_c) * 2^(-2k/v); measured: run
                        rsavq trial quantizations (seed 0) at a few sizes near the choice and
                        use the Fisher-weighted error each layer is left with (a few
                        quantizations slower; needs --groups 1; no trials with --scope layer,
                        where no bits move between layers) (default model)
  --explain             Print a table per layer: sensitivity spread, codebook sizes, bits
  --out FILE            Plan file to write (JSON)
  --quiet               No progress on stderr
  --help                Show this help`;

interface AllocateArgs {
  model: string;
  fisher: string;
  out: string;
  explain: boolean;
  options: AllocateOptions;
}

function parse(argv: string[]): AllocateArgs | null {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      fisher: { type: "string" },
      bits: { type: "string" },
      groups: { type: "string", default: "4" },
      "search-groups": { type: "boolean", default: false },
      "vector-length": { type: "string", default: "4" },
      scope: { type: "string", default: "layer" },
      "codebook-scope": { type: "string", default: "layer" },
      sensitivity: { type: "string", default: "trace" },
      "fisher-kind": { type: "string", default: "kfac" },
      distortion: { type: "string", default: "model" },
      explain: { type: "boolean", default: false },
      out: { type: "string" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return null;

  if (!values.fisher) {
    throw new UsageError("Missing --fisher: pass the statistics file from deno task calibrate");
  }
  if (!values.bits) {
    throw new UsageError(
      "Missing --bits: pass the budget in bits per weight, for example --bits 2",
    );
  }
  if (!values.out) {
    throw new UsageError("Missing --out: pass the plan file to write, for example --out plan.json");
  }

  const bits = parseNumber("--bits", values.bits, { greaterThan: 0, max: 16 });
  const vectorLength = parseNumber("--vector-length", values["vector-length"], {
    integer: true,
    min: 1,
  });
  if (![2, 4, 6, 8].includes(vectorLength)) {
    throw new UsageError(`Invalid --vector-length ${vectorLength}: expected 2, 4, 6 or 8`);
  }
  const scope = oneOf("--scope", values.scope, ["layer", "model"] as const);
  const codebookScope = oneOf("--codebook-scope", values["codebook-scope"], CODEBOOK_SCOPES);
  const sensitivity = oneOf("--sensitivity", values.sensitivity, ["trace", "gradient"] as const);
  const fisher = oneOf("--fisher-kind", values["fisher-kind"], ["kfac", "empirical"] as const);
  const distortion = oneOf("--distortion", values.distortion, DISTORTION_KINDS);

  return {
    model: values.model,
    fisher: values.fisher,
    out: values.out,
    explain: values.explain,
    options: {
      bits,
      groups: parseNumber("--groups", values.groups, { integer: true, min: 1 }),
      searchGroups: values["search-groups"],
      vectorLength,
      scope,
      codebookScope,
      sensitivity,
      fisher,
      distortion,
      quiet: values.quiet,
    },
  };
}

/** Trial quantizations on the same model and statistics, with the plan's codebook scope. */
async function openTrial(
  model: LoadedModel,
  fisher: string,
  o: AllocateOptions,
): Promise<{ run: TrialQuantization; close: () => void }> {
  const stats = await openStatistics(fisher);
  const gpu = await GpuContext.create().catch(() => null);
  const run = trialQuantization(model, stats, {
    codebookScope: o.codebookScope ?? "layer",
    vectorLength: o.vectorLength ?? 4,
    gpu,
    quiet: o.quiet,
  });
  return {
    run,
    close: () => {
      stats.close();
      gpu?.destroy();
    },
  };
}

async function run(args: AllocateArgs): Promise<void> {
  await checkOutputPath(args.out, [args.model, args.fisher]);
  const model = await loadModel(args.model);
  try {
    const stats = await openFisherStats(args.fisher);
    try {
      const trial = args.options.distortion === "measured"
        ? await openTrial(model, args.fisher, args.options)
        : null;
      let plan;
      try {
        plan = await allocateBits(stats, model.weights, { ...args.options, trial: trial?.run });
      } finally {
        trial?.close();
      }
      await writePlan(args.out, plan);
      if (args.explain) console.log(explainPlan(plan));
      if (!args.options.quiet) {
        console.error(
          `${args.out}: ${Object.keys(plan.layers).length} layers, ${
            plan.bpw.toFixed(4)
          } bits per weight stored (budget ${plan.bits}, scope ${plan.scope}, codebook scope ${plan.codebookScope}, ${plan.distortion} distortion, solver ${plan.solver})`,
        );
      }
    } finally {
      stats.close();
    }
  } finally {
    model.weights.close();
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
