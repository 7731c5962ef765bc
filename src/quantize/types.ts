/**
 * Types shared by the quantization methods: calibration statistics of one linear layer,
 * the settings every method takes, and what quantizing a layer produces.
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import type { LayerDesc } from "../formats/quantized.ts";
import type { TensorToWrite } from "../formats/safetensors.ts";
import type { Rng } from "../util/rng.ts";
import type { StorageBytes } from "./bpw.ts";
import type { EdsgMode } from "./nearest.ts";

/** Quantization methods (`--method`). */
export type QuantMethod = "rtn" | "gptq" | "kmeans" | "vptq" | "rsavq";

/** Every method, in the order reports list them. */
export const QUANT_METHODS: readonly QuantMethod[] = ["rtn", "gptq", "kmeans", "vptq", "rsavq"];

/** Methods that need calibration statistics. */
export const METHODS_NEEDING_STATISTICS: ReadonlySet<QuantMethod> = new Set([
  "gptq",
  "vptq",
  "rsavq",
]);

/** Calibration statistics of one linear layer y = W x, W [out = m, in = n]. */
export interface LayerStatistics {
  /** Input second moment A = E[x x^T], [n, n]. */
  A: Float32Array;
  /** Output-gradient second moment diagonal G_rr = E[delta_r^2], [m]. */
  gDiag?: Float32Array;
  /** Mean gradient g = E[g_s], [m, n]. */
  gradMean?: Float32Array;
  /** Empirical Fisher diagonal E[g_s * g_s], [m, n]. */
  fisherDiag?: Float32Array;
}

/** When the VQ machinery uses the GPU: by problem size, always, or never. */
export type GpuUse = "auto" | "always" | "never";

/** Source of the Fisher metric of rsavq. */
export type FisherMetric = "kfac" | "empirical";

/** Settings of the vector-quantization methods (kmeans, vptq, rsavq). */
export interface VqSettings {
  /** Vector length v along the input dimension (2, 4, 6 or 8). */
  vectorLength: number;
  /** Lloyd iterations at most. */
  iterations: number;
  /** k-means++ seeding rounds. */
  seedRounds: number;
  /** Relative damping of A (and of G for the natural gradient). */
  damp: number;
  /** EDSG weight lambda (rsavq). */
  lambda: number;
  /** EDSG term of rsavq: "projection" (published, quadratic), "linear" (first order), or
   * "none" for plain Fisher-weighted VQ. */
  edsgMode: EdsgMode;
  /** Fisher metric of rsavq: K-FAC diagonal G_rr A_jj, or the empirical diagonal. */
  fisherMetric: FisherMetric;
  /** When k-means and assignment run on the GPU: "auto" only for work large enough to
   * outweigh a GPU round trip (milliseconds each on a software adapter). */
  gpuUse: GpuUse;
  /** WebGPU context, or null for TypeScript only. */
  gpu: GpuContext | null;
  /** Seeded generator (advanced by every codebook trained). */
  rng: Rng;
}

/** One channel group of a VQ layer: rows in stored order and their codebook sizes. */
export interface VqGroupSpec {
  /** Original row indices, in the order their indices are stored. */
  rows: Uint32Array;
  /** First-stage codebook size K. */
  codebookSize: number;
  /** Residual-stage codebook size, 0 for none. */
  residualSize: number;
  /** Codebooks trained elsewhere and shared with other layers, one per stage: they are used
   * as given, stored once under their names by the caller, and not counted in this layer's
   * bytes. Omitted: the group trains and stores its own. */
  shared?: SharedCodebook[];
}

/** A codebook stored once and used by several groups or layers. */
export interface SharedCodebook {
  /** Tensor name in the quantized file. */
  name: string;
  /** f16-exact codewords [K, v] in the scale-normalized space. */
  codebook: Float32Array;
}

/** Result of quantizing one layer. */
export interface QuantizedLayer {
  /** Metadata stored under `layers`. */
  desc: LayerDesc;
  /** The layer's tensors (its own codebooks included). */
  tensors: Record<string, TensorToWrite>;
  /** Dequantized weights [rows, cols], exactly as a reader reconstructs them. */
  dequantized: Float32Array;
  /** Stored bytes by component, from src/quantize/bpw.ts. */
  bytes: StorageBytes;
}

/** Per-layer summary returned by quantizeModel and printed by the task. */
export interface LayerResult {
  /** Layer prefix, for example "model.layers.0.self_attn.q_proj". */
  prefix: string;
  /** Output channels (m). */
  rows: number;
  /** Input columns (n). */
  cols: number;
  /** Stored bytes by component. */
  bytes: StorageBytes;
  /** Bits per weight of this layer (stored bytes * 8 / rows * cols). Codebooks shared with
   * other layers are not in `bytes`; quantizeModel counts them once for their scope. */
  bpw: number;
  /** Codebook sizes per group (VQ) or [2^bits] (uniform). */
  codebookSizes: number[];
  /** Relative output error tr(E A E^T) / tr(W A W^T) with A the input second moment, or
   * the relative squared Frobenius error when no statistics were given. */
  relativeError: number;
  /** Fisher-weighted error (src/quantize/layer_report.ts `layerErrors`), or null when the
   * layer was quantized without statistics. */
  fisherError: number | null;
  /** Wall-clock seconds spent on the layer. */
  seconds: number;
}

/** One layer handed to a vector-quantization method. */
export interface VqLayerJob {
  /** Layer prefix (tensor names). */
  prefix: string;
  /** Weights [rows, cols]. */
  weight: Float32Array;
  rows: number;
  cols: number;
  /**
   * Channel groups (one group of all rows in order unless a WCSG plan specifies others);
   * the channel order is stored exactly when their rows, concatenated, are not 0..rows-1.
   */
  groups: VqGroupSpec[];
  /** Calibration statistics, or null for kmeans. */
  stats: LayerStatistics | null;
}
