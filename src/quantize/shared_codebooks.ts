/**
 * Codebooks shared by a scope of layers (src/quantize/scope.ts): weighted k-means on the
 * vectors of every layer in the scope, each layer weighted by its own metric.
 *
 * Channel groups are matched by rank: group g of every layer in the scope (group 0 when a
 * layer has no WCSG plan) trains and uses one codebook per stage. So all layers of a scope
 * must have the same number of groups and the same codebook sizes rank by rank.
 *
 * Weights across layers: the VQ core scales each layer's metric to mean 1 (so lambda means
 * the same in every layer). A Fisher metric is in loss units and comparable across layers,
 * so for it the trainer multiplies layer l's weights by mean(M_l) / mean over the scope,
 * and the shared codebook minimizes the scope's total Fisher-weighted error. The Hessian
 * diagonal of vptq and the unit metric of kmeans are not comparable across layers, so there
 * every layer keeps mean 1 (the layer's weights still carry its row scales squared).
 *
 * NOTE: a scope's training vectors and weights are all held in memory (8 bytes per quantized
 * weight) and k-means visits every one of them. The model scope of a multi-billion-parameter
 * model would need subsampling, which is not implemented.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { sharedCodebookName } from "./scope.ts";
import type { SharedCodebook, VqSettings } from "./types.ts";
import { trainStageCodebooks } from "./vq_codebook.ts";
import { layerTrainingVectors, meanMetric, type VqLayerInput } from "./vq_layer.ts";

/** Codebook sizes of one channel-group rank, the same in every layer of a scope. */
export interface ScopeGroupSizes {
  /** First-stage codebook size K. */
  codebookSize: number;
  /** Residual-stage size, 0 for none. */
  residualSize: number;
}

/** Training vectors of one layer of the scope. */
interface MemberVectors {
  prefix: string;
  /** Per group rank: vectors [n, v] and metric weights [n, v] (layer mean 1). */
  groups: { points: Float32Array; weights: Float32Array }[];
  /** Raw metric mean of the layer (1 without a metric). */
  metricMean: number;
  /** Weights rows * cols of the layer. */
  count: number;
}

/**
 * Collects the training vectors of a scope's layers one at a time (so each layer's weights
 * and statistics can be released after {@linkcode ScopeTrainingSet.add}), then trains the
 * scope's shared codebooks.
 *
 * @example
 * ```ts ignore
 * const set = new ScopeTrainingSet("block.0", [{ codebookSize: 256, residualSize: 0 }], true);
 * for (const input of layerInputs) set.add(input, settings);
 * const codebooks = await set.train(settings); // [group rank][stage]
 * ```
 */
export class ScopeTrainingSet {
  /** Scope key (names the codebook tensors). */
  readonly key: string;
  /** Codebook sizes per group rank. */
  readonly sizes: ScopeGroupSizes[];
  /** Whether the layers' metrics are in loss units and weigh layers against each other. */
  readonly lossUnits: boolean;
  #members: MemberVectors[] = [];

  /**
   * @param key Scope key from src/quantize/scope.ts.
   * @param sizes Codebook sizes per group rank.
   * @param lossUnits Weigh layers by their mean metric (Fisher metrics), or equally.
   */
  constructor(key: string, sizes: ScopeGroupSizes[], lossUnits: boolean) {
    this.key = key;
    this.sizes = sizes;
    this.lossUnits = lossUnits;
  }

  /**
   * Adds a layer's training vectors.
   *
   * @param input The layer as the VQ core takes it; its groups must match the scope's sizes.
   * @param settings VQ settings (vector length).
   * @throws {ShapeError} When the layer's groups differ from the scope's in count or size.
   */
  add(input: VqLayerInput, settings: VqSettings): void {
    const sizes = input.groups.map((g) => `${g.codebookSize}+${g.residualSize}`).join(", ");
    const expected = this.sizes.map((g) => `${g.codebookSize}+${g.residualSize}`).join(", ");
    if (sizes !== expected) {
      throw new ShapeError(
        `${input.prefix}: layers sharing codebooks in scope ${this.key} need the same channel groups rank by rank; this layer has codebook sizes [${sizes}], the scope [${expected}]`,
      );
    }
    this.#members.push({
      prefix: input.prefix,
      groups: layerTrainingVectors(input, settings),
      metricMean: input.metric ? meanMetric(input.metric) : 1,
      count: input.rows * input.cols,
    });
  }

  /** Layer prefixes added so far, in order. */
  get prefixes(): string[] {
    return this.#members.map((m) => m.prefix);
  }

  /**
   * Trains the shared codebooks, group rank by rank and stage by stage (advancing
   * `settings.rng` in that order), and releases the collected vectors.
   *
   * @param settings Vector length, k-means and device settings.
   * @returns Per group rank, one shared codebook per stage, named after the scope.
   */
  async train(settings: VqSettings): Promise<SharedCodebook[][]> {
    const factors = this.#layerFactors();
    const out: SharedCodebook[][] = [];
    for (const [g, size] of this.sizes.entries()) {
      const length = this.#members.reduce((n, m) => n + m.groups[g].points.length, 0);
      const points = new Float32Array(length), weights = new Float32Array(length);
      let offset = 0;
      this.#members.forEach((m, l) => {
        const group = m.groups[g];
        points.set(group.points, offset);
        if (factors[l] === 1) weights.set(group.weights, offset);
        else {
          for (let i = 0; i < group.weights.length; i++) {
            weights[offset + i] = group.weights[i] * factors[l];
          }
        }
        offset += group.points.length;
      });
      const codebooks = await trainStageCodebooks(
        points,
        weights,
        size.codebookSize,
        size.residualSize,
        settings,
      );
      out.push(
        codebooks.map((codebook, s) => ({ name: sharedCodebookName(this.key, g, s), codebook })),
      );
    }
    this.#members = [];
    return out;
  }

  /** Weight multiplier of each layer: mean(M_l) / weighted mean over the scope, or 1. */
  #layerFactors(): number[] {
    if (!this.lossUnits || this.#members.length === 1) return this.#members.map(() => 1);
    let sum = 0, count = 0;
    for (const m of this.#members) {
      sum += m.metricMean * m.count;
      count += m.count;
    }
    const mean = sum / count;
    return this.#members.map((m) => (mean > 0 ? m.metricMean / mean : 1));
  }
}
