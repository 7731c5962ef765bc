/**
 * Quantizes every linear layer of a model with one method and writes the quantized model
 * file (src/formats/quantized.ts). The embeddings, norms and output head are stored
 * unquantized (F32 by default) and never counted in bpw.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import { writeQuantizedModel } from "../formats/quantized.ts";
import { encodeFromF32 } from "../formats/dtype.ts";
import type { TensorToWrite } from "../formats/safetensors.ts";
import type { GpuContext } from "../gpu/device.ts";
import { BLOCK_LINEARS } from "../model/config.ts";
import type { LoadedModel } from "../model/model.ts";
import { Progress } from "../util/progress.ts";
import { Rng } from "../util/rng.ts";
import { bitsPerWeight } from "./bpw.ts";
import { relativeError } from "./layer_report.ts";
import { chooseCodebookSize, chooseUniformBits, MAX_CODEBOOK_SIZE, vqLayerBpw } from "./budget.ts";
import { quantizeGptqLayer } from "./gptq.ts";
import { quantizeKmeansLayer } from "./kmeans_vq.ts";
import type { EdsgMode } from "./nearest.ts";
import { planGroups, type WcsgPlan } from "./plan.ts";
import { quantizeRsavqLayer } from "./rsavq.ts";
import { quantizeRtnLayer } from "./rtn.ts";
import type { StatisticsSource } from "./statistics.ts";
import {
  type FisherMetric,
  type GpuUse,
  type LayerResult,
  type LayerStatistics,
  METHODS_NEEDING_STATISTICS,
  QUANT_METHODS,
  type QuantizedLayer,
  type QuantMethod,
  type VqLayerJob,
  type VqSettings,
} from "./types.ts";
import { quantizeVptqLayer } from "./vptq.ts";

/** Options of {@linkcode quantizeModel}; defaults in {@linkcode QUANTIZE_DEFAULTS}. */
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
  /** Columns per scale group (rtn, gptq). */
  groupSize?: number;
  /** WCSG plan to follow exactly (VQ methods). */
  plan?: WcsgPlan | null;
  /** EDSG weight (rsavq). */
  lambda?: number;
  /** EDSG term (rsavq); "none" gives plain Fisher-weighted VQ. */
  edsgMode?: EdsgMode;
  /** Fisher metric (rsavq). */
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

/** Result of {@linkcode quantizeModel}. */
export interface QuantizeResult {
  /** Written file. */
  path: string;
  method: QuantMethod;
  /** Requested bpw. */
  targetBpw: number;
  /** Achieved bpw over all quantized layers, from stored bytes. */
  bpw: number;
  /** Per-layer results in model order. */
  layers: LayerResult[];
  /** Wall-clock seconds, writing included. */
  seconds: number;
}

/**
 * Linear-layer prefixes of a model in forward order ("model.layers.0.self_attn.q_proj", ...).
 *
 * @param model Loaded model.
 */
export function linearPrefixes(model: LoadedModel): string[] {
  const out: string[] = [];
  for (let l = 0; l < model.config.nLayers; l++) {
    for (const which of BLOCK_LINEARS) out.push(`model.layers.${l}.${which}`);
  }
  return out;
}

/**
 * Quantizes a model and writes the quantized file.
 *
 * @example
 * ```ts ignore
 * const model = await loadModel("stories260K.bin");
 * const result = await quantizeModel(model, null, { method: "kmeans", bits: 3, out: "q.safetensors" });
 * console.log(result.bpw);
 * ```
 * @param model Model to quantize.
 * @param stats Calibration statistics (required by gptq, vptq and rsavq), or null.
 * @param options Method, target bits, output and method settings.
 * @throws {UsageError} On bad options, missing statistics or a target below what fits.
 */
export async function quantizeModel(
  model: LoadedModel,
  stats: StatisticsSource | null,
  options: QuantizeOptions,
): Promise<QuantizeResult> {
  const o = { ...QUANTIZE_DEFAULTS, ...stripUndefined(options) } as ResolvedOptions;
  checkOptions(o, stats);

  const start = performance.now();
  const selected = new Set(o.layers ?? linearPrefixes(model));
  const prefixes = linearPrefixes(model).filter((p) => selected.has(p));
  const settings: VqSettings = {
    vectorLength: o.vectorLength,
    iterations: o.iterations,
    seedRounds: o.seedRounds,
    damp: o.damp,
    lambda: o.lambda,
    edsgMode: o.edsgMode,
    fisherMetric: o.fisherMetric,
    gpuUse: o.gpuUse,
    gpu: o.gpu ?? null,
    rng: new Rng(o.seed),
  };
  const progress = new Progress(`quantize ${o.method}`, prefixes.length, {
    quiet: o.quiet,
    unit: "layers",
    intervalSeconds: 0,
  });

  // Quantize the selected linear layers one at a time, keeping only their packed tensors.
  const tensors: Record<string, TensorToWrite> = {};
  const layers: Record<string, QuantizedLayer["desc"]> = {};
  const results: LayerResult[] = [];
  for (const prefix of prefixes) {
    const t0 = performance.now();
    const [rows, cols] = model.weights.shape(`${prefix}.weight`);
    const weight = await model.weights.read(`${prefix}.weight`);
    const layerStats = stats && METHODS_NEEDING_STATISTICS.has(o.method)
      ? await stats.layer(prefix, rows, cols)
      : null;
    const q = await quantizeLayer(o, settings, { prefix, weight, rows, cols, stats: layerStats });
    Object.assign(tensors, q.tensors);
    layers[prefix] = q.desc;
    const result: LayerResult = {
      prefix,
      rows,
      cols,
      bytes: q.bytes,
      bpw: (q.bytes.total * 8) / (rows * cols),
      codebookSizes: q.desc.kind === "vq"
        ? q.desc.groups.map((g) => g.stages[0].size)
        : [2 ** q.desc.bits],
      relativeError: relativeError(weight, q.dequantized, rows, cols, layerStats),
      seconds: (performance.now() - t0) / 1000,
    };
    results.push(result);
    progress.advance(
      1,
      `${prefix} ${describe(q)} ${result.bpw.toFixed(3)} bpw, rel. error ${
        result.relativeError.toExponential(2)
      }`,
    );
  }

  // Store every other tensor (embeddings, norms, head, unselected layers) as it was.
  const quantized = new Set(prefixes.map((p) => `${p}.weight`));
  for (const name of model.weights.names()) {
    if (quantized.has(name)) continue;
    const data = await model.weights.read(name);
    tensors[name] = {
      dtype: o.unquantizedDtype,
      shape: model.weights.shape(name),
      data: encodeFromF32(data, o.unquantizedDtype),
    };
  }

  const bpw = bitsPerWeight(results.map((r) => ({ bytes: r.bytes, weights: r.rows * r.cols })));
  if (bpw > o.bits) {
    // Only a plan can overspend: without one every layer is sized to fit on its own.
    throw new UsageError(
      `The plan spends ${
        bpw.toFixed(4)
      } bpw, above --bits ${o.bits}: rerun deno task allocate with --bits ${o.bits} or raise --bits`,
    );
  }
  await writeQuantizedModel(o.out, {
    config: model.config,
    layers,
    tensors,
    quantization: {
      method: o.method,
      targetBpw: o.bits,
      bpw,
      source: model.path,
      statistics: o.statisticsPath ?? stats?.source ?? null,
      unquantized: o.unquantizedDtype,
      settings: {
        vectorLength: o.vectorLength,
        codebookSize: o.codebookSize ?? null,
        residual: o.residual,
        groupSize: o.groupSize,
        plan: o.plan ? true : false,
        lambda: o.lambda,
        edsgMode: o.edsgMode,
        fisherMetric: o.fisherMetric,
        seed: o.seed,
        iterations: o.iterations,
        seedRounds: o.seedRounds,
        damp: o.damp,
      },
      layers: Object.fromEntries(
        results.map((
          r,
        ) => [r.prefix, {
          bpw: r.bpw,
          codebookSizes: r.codebookSizes,
          relativeError: r.relativeError,
        }]),
      ),
    },
  });

  const seconds = (performance.now() - start) / 1000;
  progress.finish(`${bpw.toFixed(4)} bpw (target ${o.bits}) written to ${o.out}`);
  return { path: o.out, method: o.method, targetBpw: o.bits, bpw, layers: results, seconds };
}

type ResolvedOptions = QuantizeOptions & typeof QUANTIZE_DEFAULTS;

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function checkOptions(o: ResolvedOptions, stats: StatisticsSource | null): void {
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
  const isVq = o.method === "kmeans" || o.method === "vptq" || o.method === "rsavq";
  if (o.plan && !isVq) {
    throw new UsageError(
      `--plan needs a vector-quantization method (kmeans, vptq, rsavq), not ${o.method}`,
    );
  }
  if (o.plan && (o.residual || o.codebookSize)) {
    throw new UsageError("--plan sets every codebook size: drop --codebook-size and --residual");
  }
}

async function quantizeLayer(
  o: ResolvedOptions,
  settings: VqSettings,
  layer: {
    prefix: string;
    weight: Float32Array;
    rows: number;
    cols: number;
    stats: LayerStatistics | null;
  },
): Promise<QuantizedLayer> {
  const { prefix, weight, rows, cols, stats } = layer;
  if (o.method === "rtn" || o.method === "gptq") {
    const bits = chooseUniformBits(rows, cols, o.groupSize, o.bits);
    const uniform = { bits, groupSize: o.groupSize, damp: o.damp };
    return o.method === "rtn"
      ? quantizeRtnLayer(prefix, weight, rows, cols, uniform)
      : quantizeGptqLayer(prefix, weight, rows, cols, stats!.A, uniform);
  }
  let job: VqLayerJob, layerSettings = settings;
  const planLayer = o.plan?.layers[prefix];
  if (o.plan) {
    if (!planLayer) {
      throw new UsageError(
        `The plan has no entry for ${prefix}: rerun deno task allocate on this model`,
      );
    }
    if (planLayer.rows !== rows || planLayer.cols !== cols) {
      throw new UsageError(
        `The plan's ${prefix} is ${planLayer.rows}x${planLayer.cols} but the model's is ${rows}x${cols}: the plan belongs to another model`,
      );
    }
    layerSettings = { ...settings, vectorLength: planLayer.vectorLength };
    job = {
      prefix,
      weight,
      rows,
      cols,
      stats,
      groups: planGroups(planLayer),
      storeChannelOrder: true,
    };
  } else {
    const v = o.vectorLength;
    const k = o.codebookSize ?? chooseCodebookSize(rows, cols, v, o.bits, o.residual);
    const achieved = vqLayerBpw(rows, cols, v, k, o.residual);
    if (achieved > o.bits) {
      throw new UsageError(
        `--codebook-size ${k} gives ${
          achieved.toFixed(3)
        } bpw on ${prefix} (${rows}x${cols}), above --bits ${o.bits}: lower it or raise --bits`,
      );
    }
    job = {
      prefix,
      weight,
      rows,
      cols,
      stats,
      groups: [{
        rows: Uint32Array.from({ length: rows }, (_, i) => i),
        codebookSize: k,
        residualSize: o.residual,
      }],
      storeChannelOrder: false,
    };
  }
  if (o.method === "kmeans") return await quantizeKmeansLayer(job, layerSettings);
  if (o.method === "vptq") return await quantizeVptqLayer(job, layerSettings);
  return await quantizeRsavqLayer(job, layerSettings);
}

function describe(q: QuantizedLayer): string {
  if (q.desc.kind === "uniform") return `${q.desc.bits}-bit codes`;
  const sizes = q.desc.groups.map((g) => g.stages.map((s) => s.size).join("+")).join(",");
  return `v${q.desc.vectorLength} K=${sizes}`;
}
