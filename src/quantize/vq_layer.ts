/**
 * The vector-quantization core shared by kmeans, vptq and rsavq: per-output-channel scale
 * normalization, codebook training per channel group (weighted k-means, optional residual
 * stage), and codeword assignment column block by column block with GPTQ-style error
 * feedback and RSAVQ's EDSG term.
 *
 * Units: each row r is divided by a power-of-two scale s_r near its RMS, so codewords
 * live in a common range and s_r * codeword is exact in f32. The metric weight of element
 * (r, j) in that normalized space is M_rj * s_r^2, M being the method's metric in weight
 * units, scaled to mean 1 over the layer. Inputs not a multiple of v are padded with zero
 * columns of weight 0, which are stored but never dequantized or counted as weights.
 *
 * Order of work: a group's codebooks are trained first, on the layer's initial normalized
 * vectors. Then codewords are assigned column block by column block, and each block's error
 * is fed forward into the later columns. A group with shared codebooks (a codebook scope
 * wider than one layer, src/quantize/shared_codebooks.ts) skips the training: its codebooks
 * were trained on the whole scope's initial vectors and stay fixed while this layer's
 * assignment and error feedback run.
 *
 * @module
 */
import {
  f16Tensor,
  packChannelOrder,
  packIndices,
  u32Tensor,
  type VqGroupDesc,
} from "../formats/quantized.ts";
import type { TensorToWrite } from "../formats/safetensors.ts";
import { ShapeError } from "../errors.ts";
import { indexBits, vqLayerBytes } from "./bpw.ts";
import { normalizeDirection } from "./edsg.ts";
import { dampHessian, upperCholeskyOfInverse } from "./linalg.ts";
import { edsgGuide, feedBack, gatherVectors, gatherWeights } from "./vq_blocks.ts";
import type { NearestJob } from "./nearest.ts";
import { assign, trainStageCodebooks } from "./vq_codebook.ts";
import type { QuantizedLayer, VqGroupSpec, VqSettings } from "./types.ts";

/** One layer to vector-quantize. */
export interface VqLayerInput {
  /** Layer prefix (tensor names). */
  prefix: string;
  /** Weights [rows, cols]. */
  weight: Float32Array;
  rows: number;
  cols: number;
  /**
   * Channel groups. Their rows, concatenated, are a permutation of 0..rows-1, which is
   * stored (bit-packed) exactly when it is not the identity. A single group should list its
   * rows in natural order, as `planGroups` does, so that no permutation is stored.
   */
  groups: VqGroupSpec[];
  /** Metric M [rows, cols] in weight units, or null for the unweighted metric on normalized rows. */
  metric: Float32Array | null;
  /** A = E[x x^T] [cols, cols] for error feedback, or null for none. */
  hessian: Float32Array | null;
  /** EDSG natural-gradient direction N [rows, cols], or null. */
  direction: Float32Array | null;
}

/**
 * Power-of-two scale nearest (in log scale) to the RMS of a row; 1 for a zero row. The
 * exponent stays in f16's exact range [-24, 15].
 *
 * @param row Weights of one row.
 */
export function rowScale(row: ArrayLike<number>): number {
  let ss = 0;
  for (let i = 0; i < row.length; i++) ss += row[i] * row[i];
  if (!(ss > 0)) return 1;
  const e = Math.round(Math.log2(Math.sqrt(ss / row.length)));
  return 2 ** Math.min(15, Math.max(-24, e));
}

/** One group's working state. */
interface GroupState {
  spec: VqGroupSpec;
  /** f16-exact codebooks [K, v], one per stage. */
  codebooks: Float32Array[];
  /** Chosen index per stage, [rows in group, vectors per row]. */
  indices: Uint32Array[];
}

/**
 * Vector-quantizes one layer.
 *
 * @param input Weights, groups, metric, Hessian and EDSG direction.
 * @param settings Vector length, k-means, EDSG and device settings.
 * @returns Layer metadata, tensors, dequantized weights and stored bytes.
 */
export async function quantizeVqLayer(
  input: VqLayerInput,
  settings: VqSettings,
): Promise<QuantizedLayer> {
  const { weight, rows, cols, groups } = input;
  const v = settings.vectorLength, perRow = Math.ceil(cols / v), padded = perRow * v;
  checkGroups(input);
  const { scales, weights, direction } = prepareLayer(input, settings);

  // Train each group's codebooks on its initial normalized vectors, unless they are shared:
  // a shared codebook was trained on the whole scope before and stays fixed here.
  const states: GroupState[] = [];
  for (const spec of groups) {
    const codebooks = spec.shared
      ? sharedCodebooks(input.prefix, spec, v)
      : await trainStageCodebooks(
        gatherVectors(weight, scales, spec.rows, cols, v, 0, perRow),
        gatherWeights(weights, spec.rows, padded, 0, padded),
        spec.codebookSize,
        spec.residualSize,
        settings,
      );
    states.push({
      spec,
      codebooks,
      indices: codebooks.map(() => new Uint32Array(spec.rows.length * perRow)),
    });
  }

  // Assign column block by column block, feeding errors forward when a Hessian is given.
  const target = Float64Array.from(weight);
  let u: Float64Array | null = null;
  if (input.hessian) {
    const { h, dead } = dampHessian(input.hessian, cols, settings.damp);
    for (const j of dead) for (let r = 0; r < rows; r++) target[r * cols + j] = 0;
    u = upperCholeskyOfInverse(h, cols);
  }
  const out = new Float32Array(rows * cols);
  const running = new Float64Array(rows); // EDSG: sum over assigned columns of E_rj N_rj
  const blockwise = u !== null || direction !== null;
  const blocks = blockwise ? Array.from({ length: perRow }, (_, q) => [q, q + 1]) : [[0, perRow]];
  for (const [q0, q1] of blocks) {
    const chosen = new Float32Array(rows * (q1 - q0) * v); // sum of the chosen codewords
    for (let stage = 0; stage < 2; stage++) {
      const active = states.filter((s) => s.codebooks.length > stage);
      if (!active.length) break;
      const jobs: NearestJob[] = active.map((s) => {
        const points = gatherVectors(target, scales, s.spec.rows, cols, v, q0, q1);
        for (let i = 0; i < s.spec.rows.length; i++) {
          const c = chosen.subarray(
            s.spec.rows[i] * (q1 - q0) * v,
            (s.spec.rows[i] + 1) * (q1 - q0) * v,
          );
          for (let d = 0; d < c.length; d++) points[i * c.length + d] -= c[d];
        }
        const job: NearestJob = {
          vectorLength: v,
          points,
          weights: gatherWeights(weights, s.spec.rows, padded, q0 * v, q1 * v),
          codebook: s.codebooks[stage],
        };
        if (direction) {
          job.guide = edsgGuide(
            s.spec.rows,
            target,
            weight,
            direction,
            scales,
            running,
            cols,
            v,
            q0,
            q1,
          );
          job.mode = settings.edsgMode;
          job.lambda = settings.lambda;
        }
        return job;
      });
      const results = await assign(jobs, settings);
      active.forEach((s, a) => {
        const { index } = results[a], codebook = s.codebooks[stage], span = q1 - q0;
        for (let i = 0; i < s.spec.rows.length; i++) {
          const row = s.spec.rows[i];
          for (let q = 0; q < span; q++) {
            const k = index[i * span + q];
            s.indices[stage][i * perRow + q0 + q] = k;
            for (let d = 0; d < v; d++) {
              chosen[(row * span + q) * v + d] = Math.fround(
                chosen[(row * span + q) * v + d] + codebook[k * v + d],
              );
            }
          }
        }
      });
    }
    const j0 = q0 * v, j1 = Math.min(cols, q1 * v);
    for (let r = 0; r < rows; r++) {
      for (let j = j0; j < j1; j++) {
        out[r * cols + j] = Math.fround(scales[r] * chosen[(r * (q1 - q0)) * v + j - j0]);
        if (direction) {
          running[r] += (out[r * cols + j] - weight[r * cols + j]) * direction[r * cols + j];
        }
      }
    }
    if (u) feedBack(target, out, u, rows, cols, j0, j1);
  }
  return assemble(input, settings, states, scales, out);
}

/** Scale-normalized metric weights and EDSG direction of a layer. */
interface PreparedLayer {
  /** Power-of-two row scales [rows]. */
  scales: Float32Array;
  /** Metric weights in the normalized space [rows, padded columns], 0 on padding. */
  weights: Float32Array;
  /** Normalized EDSG direction [rows, cols], or null without EDSG. */
  direction: Float32Array | null;
}

function prepareLayer(
  input: VqLayerInput,
  settings: VqSettings,
  withDirection = true,
): PreparedLayer {
  const { weight, rows, cols } = input;
  const v = settings.vectorLength, perRow = Math.ceil(cols / v), padded = perRow * v;
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) scales[r] = rowScale(weight.subarray(r * cols, (r + 1) * cols));

  // Metric weights in the normalized space [rows, padded]; padding weighs 0.
  let metric = input.metric;
  if (metric) {
    const mean = meanMetric(metric);
    const scaled = new Float32Array(metric.length);
    for (let i = 0; i < metric.length; i++) {
      scaled[i] = mean > 0 ? Math.max(0, metric[i]) / mean : 1;
    }
    metric = scaled;
  }
  const weights = new Float32Array(rows * padded);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      weights[r * padded + j] = (metric ? metric[r * cols + j] : 1) * scales[r] * scales[r];
    }
  }
  const direction = withDirection && input.direction && settings.edsgMode !== "none"
    ? normalizeDirection(
      input.direction,
      metric ?? new Float32Array(rows * cols).fill(1),
      rows,
      cols,
    )
    : null;

  return { scales, weights, direction };
}

/**
 * Mean of the metric over a layer, negative entries counted as 0; the VQ core divides the
 * metric by it, so each layer's metric has mean 1.
 *
 * @param metric Metric M [rows, cols] in weight units.
 */
export function meanMetric(metric: Float32Array): number {
  let mean = 0;
  for (const m of metric) mean += Math.max(0, m) / metric.length;
  return mean;
}

/**
 * Gathers the scale-normalized vectors and metric weights each group trains its codebooks
 * on, so that a caller can train one codebook on several layers and pass it back through
 * {@linkcode VqGroupSpec.shared}.
 *
 * @param input The layer, as for {@linkcode quantizeVqLayer}.
 * @param settings VQ settings (vector length, EDSG mode).
 * @returns Per group: vectors [rows in group * vectors per row, v] and weights of the same shape.
 */
export function layerTrainingVectors(
  input: VqLayerInput,
  settings: VqSettings,
): { points: Float32Array; weights: Float32Array }[] {
  checkGroups(input);
  const { scales, weights } = prepareLayer(input, settings, false);
  const v = settings.vectorLength, perRow = Math.ceil(input.cols / v);
  return input.groups.map((spec) => ({
    points: gatherVectors(input.weight, scales, spec.rows, input.cols, v, 0, perRow),
    weights: gatherWeights(weights, spec.rows, perRow * v, 0, perRow * v),
  }));
}

function checkGroups(input: VqLayerInput): void {
  const seen = new Uint8Array(input.rows);
  let position = 0;
  for (const g of input.groups) {
    for (const r of g.rows) {
      if (r >= input.rows || seen[r]) {
        throw new ShapeError(
          `${input.prefix}: channel groups must list every row 0..${
            input.rows - 1
          } exactly once; row ${r} is repeated or out of range`,
        );
      }
      seen[r] = 1;
      position++;
    }
  }
  if (position !== input.rows) {
    throw new ShapeError(`${input.prefix}: channel groups cover ${position} of ${input.rows} rows`);
  }
}

function sharedCodebooks(prefix: string, spec: VqGroupSpec, v: number): Float32Array[] {
  const sizes = [spec.codebookSize, ...(spec.residualSize > 0 ? [spec.residualSize] : [])];
  if (
    spec.shared!.length !== sizes.length ||
    spec.shared!.some((s, i) => s.codebook.length !== sizes[i] * v)
  ) {
    throw new ShapeError(
      `${prefix}: shared codebooks must be one per stage with shapes ${
        sizes.map((k) => `[${k}, ${v}]`).join(", ")
      }`,
    );
  }
  return spec.shared!.map((s) => s.codebook);
}

function assemble(
  input: VqLayerInput,
  settings: VqSettings,
  states: GroupState[],
  scales: Float32Array,
  out: Float32Array,
): QuantizedLayer {
  const { prefix, rows, cols } = input, v = settings.vectorLength;
  const tensors: Record<string, TensorToWrite> = {
    [`${prefix}.scales`]: f16Tensor(scales, [rows]),
  };
  const order = new Uint32Array(rows);
  let p = 0;
  for (const s of states) for (const r of s.spec.rows) order[p++] = r;
  // Only a reordering is stored; `storesChannelOrder` is the rule the allocator counts by.
  const storeOrder = order.some((r, i) => r !== i);
  if (storeOrder) {
    const words = packChannelOrder(order);
    tensors[`${prefix}.channel_order`] = u32Tensor(words, [words.length]);
  }
  const groups: VqGroupDesc[] = [];
  let start = 0;
  states.forEach((s, g) => {
    const end = start + s.spec.rows.length;
    const stages = s.codebooks.map((codebook, stage) => {
      const k = codebook.length / v, words = packIndices(s.indices[stage], indexBits(k));
      const shared = s.spec.shared?.[stage];
      const names = {
        codebook: shared ? shared.name : `${prefix}.codebook.g${g}.s${stage}`,
        indices: `${prefix}.indices.g${g}.s${stage}`,
      };
      tensors[names.indices] = u32Tensor(words, [words.length]);
      // The caller that shares a codebook stores it once, so layers using it do not.
      if (!shared) tensors[names.codebook] = f16Tensor(codebook, [k, v]);
      return { ...names, size: k };
    });
    groups.push({ start, end, stages });
    start = end;
  });
  const bytes = vqLayerBytes({
    rows,
    cols,
    vectorLength: v,
    groups: states.map((s) => ({
      rows: s.spec.rows.length,
      codebookSize: s.spec.codebookSize,
      residualCodebookSize: s.spec.residualSize,
      ownsCodebook: !s.spec.shared,
    })),
    scales: true,
    permutation: storeOrder,
  });
  return {
    desc: {
      kind: "vq",
      rows,
      cols,
      vectorLength: v,
      channelOrder: storeOrder,
      groups,
    },
    tensors,
    dequantized: out,
    bytes,
  };
}
