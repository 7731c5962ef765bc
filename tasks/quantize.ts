/**
 * `deno task quantize`: quantize a model's linear layers and write a quantized model file.
 *
 * deno task quantize --model PATH [--fisher FILE] --method rtn|gptq|kmeans|vptq|rsavq
 *   --bits B [--vector-length V] [--codebook-size K] [--residual K2]
 *   [--codebook-scope layer|block|type|model|auto] [--group-size G]
 *   [--plan FILE] [--lambda L] [--edsg projection|linear|none] [--fisher-metric kfac|empirical]
 *   [--iterations N] [--seed S] [--gpu auto|always|never] [--quiet] --out FILE
 *
 * @module
 */
import { parseArgs } from "node:util";
import { checkOutputPath } from "../src/util/output_path.ts";
import { UsageError } from "../src/errors.ts";
import {
  MODEL_DEFAULT_HELP,
  oneOf,
  optionalNumber,
  optionalOneOf,
  parseNumber,
  REFERENCE_MODEL,
} from "./_args.ts";
import { GpuContext } from "../src/gpu/device.ts";
import { loadModel } from "../src/model/load.ts";
import type { EdsgMode } from "../src/quantize/nearest.ts";
import { planCodebookScope, readWcsgPlan, type WcsgPlan } from "../src/quantize/plan.ts";
import {
  CODEBOOK_SCOPE_OPTIONS,
  type CodebookScopeOption,
  QUANTIZE_DEFAULTS,
  quantizeModel,
} from "../src/quantize/quantize_model.ts";
import { totalBytes } from "../src/quantize/layer_report.ts";
import { openStatistics } from "../src/quantize/statistics.ts";
import {
  type FisherMetric,
  type GpuUse,
  QUANT_METHODS,
  type QuantMethod,
} from "../src/quantize/types.ts";

const HELP = `Quantize the linear layers of a model and write a quantized model file.

Usage: deno task quantize [--model PATH] --method M --bits B --out FILE [options]

  --model PATH          llama2.c .bin, GGUF, Hugging Face directory or quantized .safetensors
                        (${MODEL_DEFAULT_HELP})
  --fisher FILE         calibration statistics from deno task calibrate (gptq, vptq, rsavq need it)
  --method M            ${QUANT_METHODS.join(" | ")}
  --bits B              target bits per weight, overhead included; never exceeded
  --vector-length V     VQ vector length: 2, 4, 6 or 8 (default ${QUANTIZE_DEFAULTS.vectorLength})
  --codebook-size K     fixed codebook size instead of the largest that fits --bits
  --residual K2         add a residual stage with K2 codewords (default none)
  --codebook-scope S    share VQ codebooks per layer | block | type (one per projection
                        across blocks) | model, or auto: try each and keep the lowest
                        Fisher-weighted error (needs --fisher) (default ${QUANTIZE_DEFAULTS.codebookScope})
  --group-size G        columns per scale group for rtn and gptq (default ${QUANTIZE_DEFAULTS.groupSize})
  --plan FILE           WCSG plan from deno task allocate; followed exactly
  --lambda L            EDSG weight for rsavq (default ${QUANTIZE_DEFAULTS.lambda})
  --edsg MODE           rsavq EDSG term: projection | linear | none (default ${QUANTIZE_DEFAULTS.edsgMode})
  --fisher-metric M     rsavq metric: kfac (G_rr A_jj) | empirical (fisher_diag) (default ${QUANTIZE_DEFAULTS.fisherMetric})
  --iterations N        Lloyd iterations at most (default ${QUANTIZE_DEFAULTS.iterations})
  --seed S              k-means++ seed (default ${QUANTIZE_DEFAULTS.seed})
  --gpu WHEN            WebGPU for k-means and assignment: auto (large problems only),
                        always or never (default auto)
  --quiet               print nothing on stderr
  --out FILE            output .safetensors path
  --help                show this text
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      fisher: { type: "string" },
      method: { type: "string" },
      bits: { type: "string" },
      "vector-length": { type: "string" },
      "codebook-size": { type: "string" },
      residual: { type: "string" },
      "codebook-scope": { type: "string" },
      "group-size": { type: "string" },
      plan: { type: "string" },
      lambda: { type: "string" },
      edsg: { type: "string" },
      "fisher-metric": { type: "string" },
      iterations: { type: "string" },
      seed: { type: "string" },
      gpu: { type: "string", default: "auto" },
      quiet: { type: "boolean", default: false },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }

  for (const flag of ["method", "out"] as const) {
    if (!values[flag]) throw new UsageError(`--${flag} is required (see --help)`);
  }
  if (!values.bits && !values.plan) {
    throw new UsageError("--bits is required without --plan (see --help)");
  }

  const method = oneOf<QuantMethod>("--method", values.method!, QUANT_METHODS);
  await checkOutputPath(values.out!, [values.model, values.fisher, values.plan]);
  const plan = values.plan ? await readWcsgPlan(values.plan) : null;
  const bits = planBits(plan, values.bits, values.plan);
  if (!(bits > 0 && bits <= 16)) {
    throw new UsageError(`Invalid --bits ${bits}: expected bits per weight in (0, 16]`);
  }
  if (values["group-size"] && method !== "rtn" && method !== "gptq") {
    throw new UsageError(
      `--group-size sets the scale groups of rtn and gptq; ${method} keeps one scale per output channel: drop --group-size`,
    );
  }
  if (plan && values["vector-length"]) {
    throw new UsageError(
      "--plan fixes the vector length of every layer: drop --vector-length, or allocate a new plan with it",
    );
  }
  const model = await loadModel(values.model!);
  const stats = values.fisher ? await openStatistics(values.fisher) : null;
  const gpuUse = oneOf<GpuUse>("--gpu", values.gpu!, ["auto", "always", "never"]);

  const vq = method !== "rtn" && method !== "gptq";
  let gpu: GpuContext | null = null;
  if (vq && gpuUse === "always") gpu = await GpuContext.create();
  // With "auto" a machine without WebGPU still quantizes, in TypeScript.
  if (vq && gpuUse === "auto") gpu = await GpuContext.create().catch(() => null);

  try {
    const result = await quantizeModel(model, stats, {
      method,
      bits,
      out: values.out!,
      vectorLength: optionalNumber("--vector-length", values["vector-length"]),
      codebookSize: optionalNumber("--codebook-size", values["codebook-size"]),
      residual: optionalNumber("--residual", values.residual),
      // A plan fixes the codebook scope it was allocated for; a different --codebook-scope is an error.
      codebookScope: plan
        ? planCodebookScope(plan, values["codebook-scope"])
        : optionalOneOf<CodebookScopeOption>(
          "--codebook-scope",
          values["codebook-scope"],
          CODEBOOK_SCOPE_OPTIONS,
        ),
      groupSize: optionalNumber("--group-size", values["group-size"]),
      plan,
      lambda: optionalNumber("--lambda", values.lambda),
      edsgMode: optionalOneOf<EdsgMode>("--edsg", values.edsg, ["projection", "linear", "none"]),
      fisherMetric: optionalOneOf<FisherMetric>("--fisher-metric", values["fisher-metric"], [
        "kfac",
        "empirical",
      ]),
      iterations: optionalNumber("--iterations", values.iterations),
      seed: optionalNumber("--seed", values.seed),
      gpu,
      gpuUse,
      quiet: values.quiet,
      statisticsPath: values.fisher,
    });
    const bytes = totalBytes(result.layers);
    const codebooks = bytes.codebooks + result.sharedBytes;
    const shared = result.sharedCodebooks.length
      ? ` (${result.sharedCodebooks.length} shared by ${result.codebookScope})`
      : "";
    console.log(
      `${result.method}: ${
        result.bpw.toFixed(4)
      } bpw (target ${result.targetBpw}) over ${result.layers.length} layers, codebook scope ${result.codebookScope}; ` +
        `indices ${bytes.indices} B, codebooks ${codebooks} B${shared}, scales ${bytes.scales} B, permutations ${bytes.permutation} B; ` +
        `embeddings, norms and head unquantized; ${
          result.seconds.toFixed(1)
        } s; wrote ${result.path}`,
    );
  } finally {
    stats?.close();
    model.weights.close();
    gpu?.destroy();
  }
}

/**
 * Returns the target bits: the plan's budget with --plan (a different --bits is an error,
 * because the plan's codebook sizes were chosen for its own budget), else --bits.
 */
function planBits(
  plan: WcsgPlan | null,
  bitsText: string | undefined,
  planPath: string | undefined,
): number {
  const budget = (plan as { bits?: unknown } | null)?.bits;
  if (plan && typeof budget === "number") {
    if (bitsText !== undefined && Number(bitsText) !== budget) {
      throw new UsageError(
        `--bits ${bitsText} differs from the budget ${budget} that ${planPath} was allocated for: drop --bits, or rerun deno task allocate --bits ${bitsText}`,
      );
    }
    return budget;
  }
  if (bitsText === undefined) {
    throw new UsageError(`${planPath} records no bits budget: pass --bits`);
  }
  return parseNumber("--bits", bitsText);
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`quantize: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
