/**
 * The `rsavq` method: Fisher-weighted codebooks and codeword assignment with Error
 * Direction Sensitivity Guidance (EDSG), plus GPTQ-style error feedback (RSAVQ: Xu, Hu,
 * Wu and Yang, NeurIPS 2025, arXiv 2510.01240, as the design notes read it).
 *
 * Metric: "kfac" (default) uses the K-FAC diagonal M_rj = G_rr A_jj, and "empirical" uses
 * the empirical Fisher diagonal E[g_s^2]. K-FAC is the default because it needs only
 * [out] and [in, in] statistics. EDSG adds
 * lambda (sum over the row of E_rj N_rj)^2 ("projection") or lambda <N, c - w> ("linear"),
 * N = G^{-1} g A^{-1} normalized per layer. With lambda 0, or edsgMode "none", the result
 * is plain Fisher-weighted VQ, bit for bit.
 *
 * @module
 */
import { FormatError, UsageError } from "../errors.ts";
import { naturalGradient } from "./edsg.ts";
import { quantizeVqLayer, type VqLayerInput } from "./vq_layer.ts";
import type { LayerStatistics, QuantizedLayer, VqLayerJob, VqSettings } from "./types.ts";

/**
 * Fisher metric M [rows, cols] of a layer.
 *
 * @param stats Layer statistics.
 * @param rows Output channels.
 * @param cols Input columns.
 * @param kind "kfac" (G_rr A_jj) or "empirical" (fisher_diag).
 * @param prefix Layer prefix, for errors.
 */
export function fisherMetric(
  stats: LayerStatistics,
  rows: number,
  cols: number,
  kind: "kfac" | "empirical",
  prefix: string,
): Float32Array {
  if (kind === "empirical") {
    if (!stats.fisherDiag) {
      throw new FormatError(
        "statistics",
        `${prefix}.fisher_diag`,
        "Missing tensor: the empirical Fisher metric needs it; rerun deno task calibrate or use --fisher-metric kfac",
      );
    }
    return stats.fisherDiag;
  }
  if (!stats.gDiag) {
    throw new FormatError(
      "statistics",
      `${prefix}.G_diag`,
      "Missing tensor: the K-FAC Fisher metric needs it; rerun deno task calibrate",
    );
  }
  const m = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) m[r * cols + j] = stats.gDiag[r] * stats.A[j * cols + j];
  }
  return m;
}

/**
 * Builds the VQ-core input of a layer for RSAVQ: the Fisher metric, A for error feedback
 * and the EDSG natural-gradient direction.
 *
 * @param job Weights, channel groups and statistics (A and G_diag required; grad_mean
 *   required when lambda is not 0).
 * @param settings VQ settings including lambda, EDSG mode and Fisher metric.
 * @throws {UsageError} Without statistics.
 */
export function rsavqLayerInput(job: VqLayerJob, settings: VqSettings): VqLayerInput {
  const { stats, rows, cols, prefix } = job;
  if (!stats) {
    throw new UsageError(
      `rsavq needs calibration statistics for ${prefix}: run deno task calibrate and pass --fisher`,
    );
  }
  const metric = fisherMetric(stats, rows, cols, settings.fisherMetric, prefix);
  let direction: Float32Array | null = null;
  if (settings.edsgMode !== "none") {
    if (stats.gradMean && stats.gDiag) {
      direction = naturalGradient(stats.gradMean, stats.gDiag, stats.A, rows, cols, settings.damp);
    } else if (settings.lambda !== 0) {
      throw new FormatError(
        "statistics",
        `${prefix}.grad_mean`,
        "Missing tensor: EDSG with lambda > 0 needs the mean gradient and G_diag; rerun deno task calibrate or pass --lambda 0",
      );
    }
  }
  return { ...job, metric, hessian: stats.A, direction };
}

/**
 * Quantizes a layer with RSAVQ (Fisher-weighted VQ plus EDSG).
 *
 * @param job Weights, channel groups and statistics (see {@linkcode rsavqLayerInput}).
 * @param settings VQ settings including lambda, EDSG mode and Fisher metric.
 * @throws {UsageError} Without statistics.
 */
export async function quantizeRsavqLayer(
  job: VqLayerJob,
  settings: VqSettings,
): Promise<QuantizedLayer> {
  return await quantizeVqLayer(rsavqLayerInput(job, settings), settings);
}
