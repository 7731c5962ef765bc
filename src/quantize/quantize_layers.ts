/**
 * One quantization pass over a model's linear layers with one codebook scope, kept in
 * memory: packed tensors, layer descriptions, per-layer results and the shared codebooks.
 * quantizeModel writes a pass to disk, and `--codebook-scope auto` runs one pass per scope.
 *
 * Order of work in a scope wider than one layer: first every layer of the scope is read and
 * its scale-normalized training vectors and metric weights are gathered. Then the scope's
 * codebooks are trained on all of them (src/quantize/shared_codebooks.ts). Last each layer
 * is quantized with those codebooks fixed, with its own assignment and GPTQ-style error
 * feedback. Scopes are processed in the order their first layer appears, layers in forward
 * order.
 *
 * Bits: without a plan, one codebook size K per scope is chosen so that the scope's stored
 * bytes (its layers' indices and scales plus the shared codebooks once) fit `bits` times
 * the scope's weights. Every scope meets the target on its own, so the model does too.
 *
 * @module
 */
import type { LayerDesc } from "../formats/quantized.ts";
import { f16Tensor } from "../formats/quantized.ts";
import type { TensorToWrite } from "../formats/safetensors.ts";
import type { LoadedModel } from "../model/model.ts";
import { UsageError } from "../errors.ts";
import { Progress } from "../util/progress.ts";
import { Rng } from "../util/rng.ts";
import { bitsPerWeight, codebookBytes } from "./bpw.ts";
import { chooseScopeCodebookSize, chooseUniformBits, vqScopeBpw } from "./budget.ts";
import { quantizeGptqLayer } from "./gptq.ts";
import { kmeansLayerInput } from "./kmeans_vq.ts";
import { layerErrors } from "./layer_report.ts";
import { planGroups } from "./plan.ts";
import { isVqMethod, type ResolvedQuantizeOptions } from "./quantize_options.ts";
import { rsavqLayerInput } from "./rsavq.ts";
import { quantizeRtnLayer } from "./rtn.ts";
import { type CodebookScope, groupLayersByScope, type ScopeGroup } from "./scope.ts";
import { type ScopeGroupSizes, ScopeTrainingSet } from "./shared_codebooks.ts";
import type { StatisticsSource } from "./statistics.ts";
import {
  type LayerResult,
  type LayerStatistics,
  METHODS_NEEDING_STATISTICS,
  type QuantizedLayer,
  type SharedCodebook,
  type VqLayerJob,
  type VqSettings,
} from "./types.ts";
import { vptqLayerInput } from "./vptq.ts";
import { quantizeVqLayer, type VqLayerInput } from "./vq_layer.ts";

/** A codebook stored once for several layers. */
export interface SharedCodebookInfo {
  /** Tensor name. */
  name: string;
  /** Entries K. */
  size: number;
  /** Stored bytes (f16 [K, v]). */
  bytes: number;
  /** Prefixes of the layers that use it. */
  layers: string[];
}

/** Result of one pass: everything quantizeModel writes for the quantized layers. */
export interface ScopePass {
  /** Scope the pass used. */
  scope: CodebookScope;
  /** Layer descriptions by prefix. */
  layers: Record<string, LayerDesc>;
  /** Quantized layers' tensors and the shared codebooks. */
  tensors: Record<string, TensorToWrite>;
  /** Per-layer results in forward order. */
  results: LayerResult[];
  /** Shared codebooks (empty for the layer scope). */
  shared: SharedCodebookInfo[];
  /** Bytes of the shared codebooks, each counted once. */
  sharedBytes: number;
  /** Bits per weight over the quantized layers, shared codebooks included. */
  bpw: number;
  /** Sum of the layers' Fisher-weighted errors, or null without statistics. */
  fisherError: number | null;
}

/** One VQ method's input builder. */
type LayerInputBuilder = (job: VqLayerJob, settings: VqSettings) => VqLayerInput;

/** Input builder of each VQ method, and whether its metric is in loss units. */
const VQ_INPUT: Record<
  "kmeans" | "vptq" | "rsavq",
  { build: LayerInputBuilder; lossUnits: boolean }
> = {
  kmeans: { build: kmeansLayerInput, lossUnits: false },
  vptq: { build: vptqLayerInput, lossUnits: false },
  rsavq: { build: rsavqLayerInput, lossUnits: true },
};

/**
 * Quantizes the selected layers of a model with one codebook scope, in memory.
 *
 * @param model Model to quantize.
 * @param stats Calibration statistics, or null.
 * @param o Resolved options (method, bits, plan, ...).
 * @param prefixes Layers to quantize, in forward order.
 * @param scope Codebook scope (VQ methods; rtn and gptq always use "layer").
 * @throws {UsageError} When the target bits cannot be met or a plan cannot be shared.
 */
export async function quantizeLayers(
  model: LoadedModel,
  stats: StatisticsSource | null,
  o: ResolvedQuantizeOptions,
  prefixes: string[],
  scope: CodebookScope,
): Promise<ScopePass> {
  const pass = new LayerPass(model, stats, o, scope);
  const progress = new Progress(
    `quantize ${o.method}${scope === "layer" ? "" : ` (${scope} scope)`}`,
    prefixes.length,
    { quiet: o.quiet, unit: "layers", intervalSeconds: 0 },
  );
  const vq = isVqMethod(o.method);
  for (const group of groupLayersByScope(prefixes, vq ? scope : "layer")) {
    if (vq && scope !== "layer") await pass.sharedScope(group, progress);
    else for (const prefix of group.prefixes) await pass.layer(prefix, null, progress);
  }

  const order = new Map(prefixes.map((p, i) => [p, i]));
  const results = pass.results.sort((a, b) => order.get(a.prefix)! - order.get(b.prefix)!);
  const sharedBytes = pass.shared.reduce((n, s) => n + s.bytes, 0);
  const bpw = bitsPerWeight(
    results.map((r) => ({ bytes: r.bytes, weights: r.rows * r.cols })),
    sharedBytes,
  );
  const fisher = results.every((r) => r.fisherError !== null)
    ? results.reduce((n, r) => n + r.fisherError!, 0)
    : null;
  // A trial quantization with a fixed codebook size has no finite target.
  const target = Number.isFinite(o.bits) ? ` (target ${o.bits})` : "";
  progress.finish(`${bpw.toFixed(4)} bpw${target}`);
  return {
    scope,
    layers: pass.layers,
    tensors: pass.tensors,
    results,
    shared: pass.shared,
    sharedBytes,
    bpw,
    fisherError: fisher,
  };
}

/** State of one pass: settings, the seeded generator and what has been produced. */
class LayerPass {
  readonly layers: Record<string, LayerDesc> = {};
  readonly tensors: Record<string, TensorToWrite> = {};
  readonly results: LayerResult[] = [];
  readonly shared: SharedCodebookInfo[] = [];
  #model: LoadedModel;
  #stats: StatisticsSource | null;
  #o: ResolvedQuantizeOptions;
  #scope: CodebookScope;
  #settings: VqSettings;

  constructor(
    model: LoadedModel,
    stats: StatisticsSource | null,
    o: ResolvedQuantizeOptions,
    scope: CodebookScope,
  ) {
    this.#model = model;
    this.#stats = stats;
    this.#o = o;
    this.#scope = scope;
    // Every pass starts from the seed, so a scope tried by `auto` equals the same scope run alone.
    this.#settings = {
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
  }

  /** Trains a scope's shared codebooks on all its layers, then quantizes each layer with them. */
  async sharedScope(group: ScopeGroup, progress: Progress): Promise<void> {
    const { sizes, vectorLength } = this.#scopeSizes(group);
    const settings = { ...this.#settings, vectorLength };
    const method = this.#o.method as keyof typeof VQ_INPUT;
    const training = new ScopeTrainingSet(group.key, sizes, VQ_INPUT[method].lossUnits);
    for (const prefix of group.prefixes) {
      const layer = await this.#read(prefix);
      training.add(VQ_INPUT[method].build(this.#job(layer, sizes, null), settings), settings);
    }
    const codebooks = await training.train(settings);
    for (const stages of codebooks) {
      for (const { name, codebook } of stages) {
        const size = codebook.length / vectorLength;
        this.tensors[name] = f16Tensor(codebook, [size, vectorLength]);
        this.shared.push({
          name,
          size,
          bytes: codebookBytes(size, vectorLength),
          layers: [...group.prefixes],
        });
      }
    }
    for (const prefix of group.prefixes) {
      await this.layer(prefix, { sizes, vectorLength, codebooks }, progress);
    }
  }

  /** Quantizes one layer, with its own codebooks (`shared` null) or the scope's. */
  async layer(
    prefix: string,
    shared: ScopeCodebooks | null,
    progress: Progress,
  ): Promise<void> {
    const t0 = performance.now();
    const layer = await this.#read(prefix);
    const q = await this.#quantize(layer, shared);
    Object.assign(this.tensors, q.tensors);
    this.layers[prefix] = q.desc;
    const { rows, cols } = layer;
    const errors = layerErrors(
      layer.weight,
      q.dequantized,
      rows,
      cols,
      layer.stats,
      this.#o.fisherMetric,
    );
    const result: LayerResult = {
      prefix,
      rows,
      cols,
      bytes: q.bytes,
      bpw: (q.bytes.total * 8) / (rows * cols),
      codebookSizes: q.desc.kind === "vq"
        ? q.desc.groups.map((g) => g.stages[0].size)
        : [2 ** q.desc.bits],
      relativeError: errors.relative,
      fisherError: errors.fisher,
      seconds: (performance.now() - t0) / 1000,
    };
    this.results.push(result);
    progress.advance(
      1,
      `${prefix} ${describe(q)} ${result.bpw.toFixed(3)} bpw${
        shared ? " + shared codebooks" : ""
      }, rel. error ${result.relativeError.toExponential(2)}`,
    );
  }

  /** Reads a layer's weights and, when the method or `auto` needs them, its statistics. */
  async #read(prefix: string): Promise<LayerData> {
    const [rows, cols] = this.#model.weights.shape(`${prefix}.weight`);
    const weight = await this.#model.weights.read(`${prefix}.weight`);
    const wantStats = METHODS_NEEDING_STATISTICS.has(this.#o.method) ||
      this.#o.codebookScope === "auto";
    const stats = this.#stats && wantStats ? await this.#stats.layer(prefix, rows, cols) : null;
    return { prefix, weight, rows, cols, stats };
  }

  async #quantize(
    layer: LayerData,
    shared: ScopeCodebooks | null,
  ): Promise<QuantizedLayer> {
    const o = this.#o, { prefix, weight, rows, cols, stats } = layer;
    if (o.method === "rtn" || o.method === "gptq") {
      const bits = chooseUniformBits(rows, cols, o.groupSize, o.bits);
      const uniform = { bits, groupSize: o.groupSize, damp: o.damp };
      return o.method === "rtn"
        ? quantizeRtnLayer(prefix, weight, rows, cols, uniform)
        : quantizeGptqLayer(prefix, weight, rows, cols, stats!.A, uniform);
    }
    const { sizes, vectorLength } = shared ?? this.#scopeSizes({ key: prefix, prefixes: [prefix] });
    const settings = { ...this.#settings, vectorLength };
    const job = this.#job(layer, sizes, shared?.codebooks ?? null);
    return await quantizeVqLayer(VQ_INPUT[o.method].build(job, settings), settings);
  }

  /** Channel groups of a layer: from the plan, or one group of all rows in order. */
  #job(
    layer: LayerData,
    sizes: ScopeGroupSizes[],
    codebooks: SharedCodebook[][] | null,
  ): VqLayerJob {
    const planLayer = this.#o.plan?.layers[layer.prefix];
    const groups = planLayer
      ? planGroups(planLayer)
      : [{ rows: Uint32Array.from({ length: layer.rows }, (_, i) => i), ...sizes[0] }];
    if (codebooks) groups.forEach((g, i) => (g.shared = codebooks[i]));
    return { ...layer, groups };
  }

  /**
   * Codebook sizes per group rank and the vector length shared by a scope's layers: from
   * the plan (which must agree across the scope), from --codebook-size, or the largest K
   * whose scope bytes fit --bits.
   */
  #scopeSizes(group: ScopeGroup): { sizes: ScopeGroupSizes[]; vectorLength: number } {
    const o = this.#o;
    const shapes = group.prefixes.map((p) => {
      const [rows, cols] = this.#model.weights.shape(`${p}.weight`);
      return { prefix: p, rows, cols };
    });
    if (o.plan) return planScopeSizes(o, shapes, group.key, this.#scope);

    const v = o.vectorLength, scopeName = shapes.length > 1 ? group.key : undefined;
    const k = o.codebookSize ?? chooseScopeCodebookSize(shapes, v, o.bits, o.residual, scopeName);
    const achieved = vqScopeBpw(shapes, v, k, o.residual);
    if (achieved > o.bits) {
      const where = scopeName
        ? `codebook scope ${scopeName} (${shapes.length} layers)`
        : `${group.prefixes[0]} (${shapes[0].rows}x${shapes[0].cols})`;
      throw new UsageError(
        `--codebook-size ${k} gives ${
          achieved.toFixed(3)
        } bpw on ${where}, above --bits ${o.bits}: lower it or raise --bits`,
      );
    }
    return { sizes: [{ codebookSize: k, residualSize: o.residual }], vectorLength: v };
  }
}

/** Codebooks a scope shares, with the sizes and vector length they were trained for. */
interface ScopeCodebooks {
  sizes: ScopeGroupSizes[];
  vectorLength: number;
  /** Per group rank, one codebook per stage. */
  codebooks: SharedCodebook[][];
}

/** A layer's weights and statistics. */
interface LayerData {
  prefix: string;
  /** Weights [rows, cols]. */
  weight: Float32Array;
  rows: number;
  cols: number;
  stats: LayerStatistics | null;
}

/**
 * Group sizes of a scope under a WCSG plan: every layer must be in the plan with its
 * shape, and all layers of the scope must have the same vector length, group count and
 * codebook size at each group rank.
 */
function planScopeSizes(
  o: ResolvedQuantizeOptions,
  shapes: { prefix: string; rows: number; cols: number }[],
  key: string,
  scope: CodebookScope,
): { sizes: ScopeGroupSizes[]; vectorLength: number } {
  const layers = shapes.map(({ prefix, rows, cols }) => {
    const planLayer = o.plan!.layers[prefix];
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
    return { prefix, planLayer };
  });
  const first = layers[0];
  const signature = (l: typeof first) =>
    `vector length ${l.planLayer.vectorLength}, codebook sizes [${
      l.planLayer.groups.map((g) => g.codebookSize).join(", ")
    }]`;
  for (const l of layers.slice(1)) {
    if (signature(l) !== signature(first)) {
      throw new UsageError(
        `--codebook-scope ${scope}: layers of scope ${key} share codebooks by group rank, but the plan gives ${first.prefix} ${
          signature(first)
        } and ${l.prefix} ${
          signature(l)
        }: rerun deno task allocate with equal group sizes per scope, or use --codebook-scope layer`,
      );
    }
  }
  return {
    sizes: first.planLayer.groups.map((g) => ({ codebookSize: g.codebookSize, residualSize: 0 })),
    vectorLength: first.planLayer.vectorLength,
  };
}

function describe(q: QuantizedLayer): string {
  if (q.desc.kind === "uniform") return `${q.desc.bits}-bit codes`;
  const sizes = q.desc.groups.map((g) => g.stages.map((s) => s.size).join("+")).join(",");
  return `v${q.desc.vectorLength} K=${sizes}`;
}
