/**
 * Learning-rate schedule: linear warmup, then cosine decay to a floor.
 *
 * @module
 */

/** Parameters of {@linkcode learningRate}. */
export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warmup. */
  peak: number;
  /** Warmup steps; the rate rises linearly over steps 0..warmup-1. */
  warmup: number;
  /** Total optimizer steps of the run. */
  total: number;
  /** Final rate as a share of the peak. Default 0.1. */
  minRatio?: number;
}

/**
 * Returns the learning rate of optimizer step `step` (0-based).
 *
 * Warmup: peak * (step + 1) / warmup for step < warmup, so step 0 already moves.
 * Decay: min + (peak - min) * (1 + cos(pi * p)) / 2 with p = (step - warmup) /
 * (total - 1 - warmup), so the first decay step is at the peak and the last at min.
 *
 * @example Peak after warmup, floor at the end
 * ```ts
 * import { learningRate } from "./schedule.ts";
 * const s = { peak: 1e-3, warmup: 10, total: 110, minRatio: 0.1 };
 * if (learningRate(9, s) !== 1e-3 || Math.abs(learningRate(109, s) - 1e-4) > 1e-12) throw new Error();
 * ```
 * @param step Optimizer step, 0 <= step < total (later steps stay at the floor).
 * @param options Peak, warmup, total steps and floor.
 * @returns Learning rate.
 */
export function learningRate(step: number, options: ScheduleOptions): number {
  const { peak, warmup, total } = options;
  const min = peak * (options.minRatio ?? 0.1);
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const span = total - 1 - warmup;
  if (span <= 0) return peak;
  const p = Math.min(1, (step - warmup) / span);
  return min + ((peak - min) * (1 + Math.cos(Math.PI * p))) / 2;
}
