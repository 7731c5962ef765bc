/**
 * Options of quantizeModel (src/quantize/quantize_model.ts): their defaults in one place
 * and the checks that turn bad values into one clear usage error.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import type { GpuContext } from "../gpu/device.ts";
import { MAX_CODEBOOK_SIZE } from "./budget.ts";
import type { EdsgMode } from "./nearest.ts";
import type { WcsgPlan } from "./plan.ts";
import { CODEBOOK_SCOPES, type CodebookScope } from "./scope.ts";
import type { StatisticsSource } from "./statistics.ts";
import {
  type FisherMetric,
  type GpuUse,
  METHODS_NEEDING_STATISTICS,
  QUANT_METHODS,
  type QuantMethod,
} from "./types.ts";

/** Codebook scope option: a fixed scope, or `auto` to try each and keep the best. */
export type CodebookScopeOption = CodebookScope | "auto";

/** Every value `--codebook-scope` accepts. */
export const CODEBOOK_SCOPE_OPTIONS: readonly CodebookScopeOption[] = [
  ...CODEBOOK_SCOPES,
  "auto",
];

/** Options of quantizeModel; defaults in {@linkcode QUANTIZE_DEFAULTS}. */
export interface QuantizeOptions {
  /** Method. */
  method: QuantMethod;
  /** Target bits per weight over the quantized layers, overhead included. */
  bits: number;
  /** Output path (`.safetensors`). */
  out: string;
  /** Vector length v (VQ methods). */
  vectorLength?: number;
  /** Fixed first-stage codebook size instead of the largest that fits `bits`. */
  codebookSize?: number;
  /** Residual-stage codebook size, 0 for none. */
  residual?: number;
  /** Extent of VQ codebook sharing (see src/quantize/scope.ts), or "auto" to pick the scope
   * with the lowest Fisher-weighted error. rtn and gptq accept only "layer". */
  codebookScope?: CodebookScopeOption;
  /** Columns per scale group (rtn, gptq). */
  groupSize?: number;
  /** WCSG plan to follow exactly (VQ methods). */
  plan?: WcsgPlan | null;
  /** EDSG weight (rsavq). */
  lambda?: number;
  /** EDSG term (rsavq); "none" gives plain Fisher-weighted VQ. */
  edsgMode?: EdsgMode;
  /** Fisher metric (rsavq, and the error by which `auto` ranks scopes). */
  fisherMetric?: FisherMetric;
  /** Seed of the k-means++ generator. */
  seed?: number;
  /** Lloyd iterations at most. */
  iterations?: number;
  /** k-means++ seeding rounds. */
  seedRounds?: number;
  /** Relative damping of A and G. */
  damp?: number;
  /** WebGPU context, or null for TypeScript only. */
  gpu?: GpuContext | null;
  /** When k-means and assignment use the GPU (see {@linkcode GpuUse}). */
  gpuUse?: GpuUse;
  /** Store unquantized tensors as F32 or F16. */
  unquantizedDtype?: "F32" | "F16";
  /** Only these layer prefixes are quantized (others stay dense); default all linear layers. */
  layers?: string[];
  /** Print nothing on stderr. */
  quiet?: boolean;
  /** Path of the statistics file, recorded in the metadata. */
  statisticsPath?: string;
}

/** Defaults of the optional {@linkcode QuantizeOptions}. */
export const QUANTIZE_DEFAULTS = {
  vectorLength: 4,
  residual: 0,
  codebookScope: "layer" as CodebookScopeOption,
  groupSize: 128,
  lambda: 0.05,
  edsgMode: "projection" as EdsgMode,
  fisherMetric: "kfac" as FisherMetric,
  seed: 0,
  iterations: 10,
  seedRounds: 16,
  damp: 0.01,
  gpuUse: "auto" as GpuUse,
  unquantizedDtype: "F32" as const,
};

/** Options with every default filled in. */
export type ResolvedQuantizeOptions = QuantizeOptions & typeof QUANTIZE_DEFAULTS;

/**
 * Fills in the defaults of the options left undefined.
 *
 * @param options Options as given.
 */
export function resolveQuantizeOptions(options: QuantizeOptions): ResolvedQuantizeOptions {
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  return { ...QUANTIZE_DEFAULTS, ...defined } as ResolvedQuantizeOptions;
}

/** Whether a method is one of the vector-quantization methods (kmeans, vptq, rsavq). */
export function isVqMethod(method: QuantMethod): boolean {
  return method === "kmeans" || method === "vptq" || method === "rsavq";
}

/**
 * Checks resolved options before any work starts.
 *
 * @param o Resolved options.
 * @param stats Calibration statistics, or null.
 * @throws {UsageError} Naming the flag, the value and the fix.
 */
export function checkQuantizeOptions(
  o: ResolvedQuantizeOptions,
  stats: StatisticsSource | null,
): void {
  if (!QUANT_METHODS.includes(o.method)) {
    throw new UsageError(
      `--method ${o.method} is not supported: use one of ${QUANT_METHODS.join(", ")}`,
    );
  }
  if (METHODS_NEEDING_STATISTICS.has(o.method) && !stats) {
    throw new UsageError(
      `--method ${o.method} needs calibration statistics: run deno task calibrate first, then pass its output with --fisher`,
    );
  }

  if (!(o.bits > 0)) throw new UsageError(`--bits must be a positive number, got ${o.bits}`);
  if (![2, 4, 6, 8].includes(o.vectorLength)) {
    throw new UsageError(`--vector-length must be 2, 4, 6 or 8, got ${o.vectorLength}`);
  }
  for (
    const [flag, k] of [["--codebook-size", o.codebookSize], [
      "--residual",
      o.residual || undefined,
    ]] as const
  ) {
    if (k !== undefined && !(Number.isInteger(k) && k >= 1 && k <= MAX_CODEBOOK_SIZE)) {
      throw new UsageError(`${flag} must be an integer in [1, ${MAX_CODEBOOK_SIZE}], got ${k}`);
    }
  }
  if (!(Number.isInteger(o.groupSize) && o.groupSize >= 1)) {
    throw new UsageError(`--group-size must be a positive integer, got ${o.groupSize}`);
  }
  if (!(o.lambda >= 0)) {
    throw new UsageError(`--lambda must be a non-negative number, got ${o.lambda}`);
  }

  const isVq = isVqMethod(o.method);
  if (o.plan && !isVq) {
    throw new UsageError(
      `--plan needs a vector-quantization method (kmeans, vptq, rsavq), not ${o.method}`,
    );
  }
  if (o.plan && (o.residual || o.codebookSize)) {
    throw new UsageError("--plan sets every codebook size: drop --codebook-size and --residual");
  }

  if (!CODEBOOK_SCOPE_OPTIONS.includes(o.codebookScope)) {
    throw new UsageError(
      `--codebook-scope must be one of ${
        CODEBOOK_SCOPE_OPTIONS.join(", ")
      }, got ${o.codebookScope}`,
    );
  }
  if (!isVq && o.codebookScope !== "layer") {
    throw new UsageError(
      `--codebook-scope ${o.codebookScope} needs a vector-quantization method (kmeans, vptq, rsavq); ${o.method} has no codebooks`,
    );
  }
  if (o.codebookScope === "auto" && !stats) {
    throw new UsageError(
      "--codebook-scope auto ranks scopes by their Fisher-weighted error on calibration statistics: run deno task calibrate and pass its output with --fisher",
    );
  }
}
