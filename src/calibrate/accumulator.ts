/**
 * Running sums of the Fisher statistics over calibration sequences, in f64 on the CPU.
 *
 * Per linear layer with input x_t [n] and output gradient delta_t [m] at token t of
 * sequence s (delta is the gradient of that sequence's mean next-token cross-entropy):
 * - `A` sums x_t x_t^T ([n, n], upper triangle only, mirrored when finalized, so the
 *   result is exactly symmetric), once per input group;
 * - `G_diag` sums delta_t^2 ([m]) and, with full G, `G` sums delta_t delta_t^T ([m, m]);
 * - `grad` sums g_s = sum_t delta_t x_t^T ([m, n]) and `fisher` sums g_s * g_s.
 * Token means divide by the token count, sequence means by the sequence count.
 *
 * The sums are the resumable state: a checkpoint stores them exactly, so a resumed run
 * continues with the same numbers an uninterrupted run has at that point.
 *
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import type { LinearTap } from "../model/reference_backward.ts";
import { type CalibratedLinear, calibratedLinears } from "./layers.ts";
import { ShapeError } from "../errors.ts";

/** Options of {@linkcode FisherAccumulator}. */
export interface AccumulatorOptions {
  /** Also accumulate the full output-gradient second moment G [m, m]. */
  fullG: boolean;
}

/** Means of one linear layer's statistics, ready to write (f32, row-major). */
export interface LinearStats {
  /** E[x x^T] over tokens [in, in]. */
  A: Float32Array;
  /** E[delta^2] over tokens [out]. */
  G_diag: Float32Array;
  /** E[delta delta^T] over tokens [out, out], only with full G. */
  G?: Float32Array;
  /** E_s[g_s] [out, in]. */
  grad_mean: Float32Array;
  /** E_s[g_s * g_s] [out, in]. */
  fisher_diag: Float32Array;
}

/**
 * Accumulates per-layer sums over sequences.
 *
 * @example Feed one sequence's taps
 * ```ts ignore
 * const acc = new FisherAccumulator(config, { fullG: false });
 * const { loss } = ref.backward(tokens, { onLinear: (tap) => acc.addTap(tap) });
 * acc.endSequence(tokens.length, loss);
 * const stats = acc.finalize();
 * ```
 */
export class FisherAccumulator {
  /** Layers in forward order. */
  readonly layers: CalibratedLinear[];
  /** Whether full G is accumulated. */
  readonly fullG: boolean;
  /** Sums by state name ("<prefix>.G_diag", "<group>.A", ...); see {@linkcode stateNames}. */
  readonly sums: Map<string, Float64Array>;
  /** Completed sequences. */
  sequences = 0;
  /** Tokens of completed sequences (every position, the last one included). */
  tokens = 0;
  /** Sum of the per-sequence losses (nats). */
  lossSum = 0;
  #byKey = new Map<string, CalibratedLinear>();

  /**
   * Creates zeroed sums for every calibrated linear of `config`.
   *
   * @param config Model hyperparameters.
   * @param options Whether to keep full G.
   */
  constructor(config: ModelConfig, options: AccumulatorOptions) {
    this.layers = calibratedLinears(config);
    this.fullG = options.fullG;
    this.sums = new Map();
    for (const [name, size] of stateShapes(this.layers, this.fullG)) {
      this.sums.set(name, new Float64Array(size));
    }
    for (const layer of this.layers) this.#byKey.set(`${layer.layer}:${layer.linear}`, layer);
  }

  /**
   * Adds one linear layer's input and output gradient of the current sequence.
   *
   * @param tap The layer's x [T, in], delta [T, out] and g = delta^T x [out, in].
   */
  addTap(tap: LinearTap): void {
    const layer = this.#byKey.get(`${tap.layer}:${tap.linear}`);
    if (!layer) throw new ShapeError(`No calibrated layer ${tap.layer}.${tap.linear}`);
    const { T } = tap, n = layer.inDim, m = layer.outDim;
    if (tap.inDim !== n || tap.outDim !== m) {
      throw new ShapeError(
        `${layer.prefix}: tap is [${tap.outDim}, ${tap.inDim}], expected [${m}, ${n}]`,
      );
    }
    if (layer.ownsInput) addGram(this.sums.get(`${layer.inputGroup}.A`)!, tap.x, T, n);
    const gDiag = this.sums.get(`${layer.prefix}.G_diag`)!;
    for (let t = 0; t < T; t++) {
      for (let r = 0; r < m; r++) gDiag[r] += tap.dy[t * m + r] * tap.dy[t * m + r];
    }
    if (this.fullG) addGram(this.sums.get(`${layer.prefix}.G`)!, tap.dy, T, m);
    const grad = this.sums.get(`${layer.prefix}.grad`)!;
    const fisher = this.sums.get(`${layer.prefix}.fisher`)!;
    for (let i = 0; i < grad.length; i++) {
      grad[i] += tap.dw[i];
      fisher[i] += tap.dw[i] * tap.dw[i];
    }
  }

  /**
   * Marks the current sequence complete.
   *
   * @param T Its token count.
   * @param loss Its mean next-token cross-entropy.
   */
  endSequence(T: number, loss: number): void {
    this.sequences++;
    this.tokens += T;
    this.lossSum += loss;
  }

  /**
   * Divides the sums into means: A, G_diag and G by the token count, grad_mean and
   * fisher_diag by the sequence count.
   *
   * @returns Statistics by layer prefix, in forward order.
   */
  finalize(): Map<string, LinearStats> {
    if (this.sequences === 0) throw new ShapeError("No calibration sequence was accumulated");
    const perToken = 1 / this.tokens, perSequence = 1 / this.sequences;
    const out = new Map<string, LinearStats>();
    for (const layer of this.layers) {
      const p = layer.prefix;
      const stats: LinearStats = {
        A: symmetricMean(this.sums.get(`${layer.inputGroup}.A`)!, layer.inDim, perToken),
        G_diag: scaled(this.sums.get(`${p}.G_diag`)!, perToken),
        grad_mean: scaled(this.sums.get(`${p}.grad`)!, perSequence),
        fisher_diag: scaled(this.sums.get(`${p}.fisher`)!, perSequence),
      };
      if (this.fullG) stats.G = symmetricMean(this.sums.get(`${p}.G`)!, layer.outDim, perToken);
      out.set(p, stats);
    }
    return out;
  }
}

/**
 * Lists the state sums and their lengths in a fixed order (the checkpoint's order).
 *
 * @param layers Calibrated linears.
 * @param fullG Whether full G is kept.
 * @returns [name, element count] pairs.
 */
export function stateShapes(layers: CalibratedLinear[], fullG: boolean): [string, number][] {
  const out: [string, number][] = [];
  for (const layer of layers) {
    if (layer.ownsInput) out.push([`${layer.inputGroup}.A`, layer.inDim * layer.inDim]);
    out.push([`${layer.prefix}.G_diag`, layer.outDim]);
    if (fullG) out.push([`${layer.prefix}.G`, layer.outDim * layer.outDim]);
    out.push([`${layer.prefix}.grad`, layer.outDim * layer.inDim]);
    out.push([`${layer.prefix}.fisher`, layer.outDim * layer.inDim]);
  }
  return out;
}

/** Adds the upper triangle of x^T x (x is [T, n]) to sum [n, n]. */
function addGram(sum: Float64Array, x: Float64Array, T: number, n: number): void {
  for (let t = 0; t < T; t++) {
    const o = t * n;
    for (let i = 0; i < n; i++) {
      const xi = x[o + i];
      if (xi === 0) continue;
      const row = i * n;
      for (let j = i; j < n; j++) sum[row + j] += xi * x[o + j];
    }
  }
}

/** Mirrors the upper triangle of sum [n, n] and scales it into a new f32 matrix. */
function symmetricMean(sum: Float64Array, n: number, scale: number): Float32Array {
  const out = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const v = sum[i * n + j] * scale;
      out[i * n + j] = v;
      out[j * n + i] = v;
    }
  }
  return out;
}

function scaled(sum: Float64Array, scale: number): Float32Array {
  const out = new Float32Array(sum.length);
  for (let i = 0; i < sum.length; i++) out[i] = sum[i] * scale;
  return out;
}
