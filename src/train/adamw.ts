/**
 * AdamW (Loshchilov and Hutter) with bias correction and decoupled weight decay, and
 * global-norm gradient clipping, over named f32 tensors updated in place.
 *
 * One step for parameter p with gradient g at step t (1-based), as PyTorch's AdamW:
 *   p -= lr * wd * p                       (only for decayed tensors)
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *
 * @module
 */
import { ShapeError } from "../errors.ts";

/** Hyperparameters of {@linkcode AdamW}. */
export interface AdamWOptions {
  /** First-moment decay. Default 0.9. */
  beta1?: number;
  /** Second-moment decay. Default 0.95. */
  beta2?: number;
  /** Denominator floor. Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay per unit learning rate. Default 0.1. */
  weightDecay?: number;
}

/** Optimizer state that a checkpoint stores. */
export interface AdamWState {
  /** Steps taken so far. */
  step: number;
  /** First moments by tensor name. */
  m: Map<string, Float32Array>;
  /** Second moments by tensor name. */
  v: Map<string, Float32Array>;
}

/**
 * Returns true when weight decay applies to a tensor. Matrices (embedding, linears, head)
 * decay. RMSNorm gains and biases do not, because shrinking them toward 0 is no useful prior.
 *
 * @param name Canonical tensor name.
 * @param shape Tensor shape.
 */
export function isDecayed(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && !name.endsWith(".bias");
}

/**
 * AdamW over a fixed set of named tensors.
 *
 * @example One step against a hand computation
 * ```ts
 * import { AdamW } from "./adamw.ts";
 * const p = new Map([["w", new Float32Array([1])]]);
 * const opt = new AdamW(p, new Set(), { weightDecay: 0 });
 * opt.step(new Map([["w", new Float32Array([0.5])]]), 0.1);
 * // After bias correction the first step moves by lr * g / |g| = 0.1.
 * if (Math.abs(p.get("w")![0] - 0.9) > 1e-6) throw new Error("wrong step");
 * ```
 */
export class AdamW {
  #params: Map<string, Float32Array>;
  #decayed: ReadonlySet<string>;
  #beta1: number;
  #beta2: number;
  #eps: number;
  #wd: number;
  #state: AdamWState;

  /**
   * Creates an optimizer with zero moments.
   *
   * @param params Tensors updated in place, by name.
   * @param decayed Names of the tensors that get weight decay (see {@linkcode isDecayed}).
   * @param options Betas, epsilon and weight decay.
   */
  constructor(
    params: Map<string, Float32Array>,
    decayed: ReadonlySet<string>,
    options: AdamWOptions = {},
  ) {
    this.#params = params;
    this.#decayed = decayed;
    this.#beta1 = options.beta1 ?? 0.9;
    this.#beta2 = options.beta2 ?? 0.95;
    this.#eps = options.eps ?? 1e-8;
    this.#wd = options.weightDecay ?? 0.1;
    const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
    for (const [name, p] of params) {
      m.set(name, new Float32Array(p.length));
      v.set(name, new Float32Array(p.length));
    }
    this.#state = { step: 0, m, v };
  }

  /** Steps taken so far. */
  get stepCount(): number {
    return this.#state.step;
  }

  /** The live optimizer state (moments are not copied). */
  get state(): AdamWState {
    return this.#state;
  }

  /**
   * Replaces the state with a saved one (resume), checking names and sizes.
   *
   * @param state Saved step and moments.
   * @throws {ShapeError} When a moment is missing or has the wrong length.
   */
  loadState(state: AdamWState): void {
    for (const [name, p] of this.#params) {
      for (const [which, moments] of [["m", state.m], ["v", state.v]] as const) {
        const t = moments.get(name);
        if (!t || t.length !== p.length) {
          throw new ShapeError(
            `Optimizer state ${which} of ${name}: expected ${p.length} values, got ${
              t?.length ?? "none"
            }`,
          );
        }
      }
    }
    this.#state = { step: state.step, m: state.m, v: state.v };
  }

  /**
   * Applies one AdamW update with learning rate `lr`.
   *
   * @param grads Gradients by name (every parameter must have one).
   * @param lr Learning rate of this step.
   * @throws {ShapeError} When a gradient is missing or has the wrong length.
   */
  step(grads: ReadonlyMap<string, Float32Array>, lr: number): void {
    const s = this.#state;
    s.step++;
    const b1 = this.#beta1, b2 = this.#beta2, eps = this.#eps;
    const c1 = 1 - Math.pow(b1, s.step), c2 = 1 - Math.pow(b2, s.step);
    for (const [name, p] of this.#params) {
      const g = grads.get(name);
      if (!g || g.length !== p.length) {
        throw new ShapeError(
          `Gradient of ${name}: expected ${p.length} values, got ${g?.length ?? "none"}`,
        );
      }
      const m = s.m.get(name)!, v = s.v.get(name)!;
      const shrink = this.#decayed.has(name) ? 1 - lr * this.#wd : 1;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i];
        const mi = b1 * m[i] + (1 - b1) * gi;
        const vi = b2 * v[i] + (1 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * shrink - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
      }
    }
  }
}

/**
 * Scales all gradients together so that their global L2 norm is at most `maxNorm`.
 *
 * @example
 * ```ts
 * import { clipGradNorm } from "./adamw.ts";
 * const g = new Map([["a", new Float32Array([3])], ["b", new Float32Array([4])]]);
 * if (clipGradNorm(g, 1) !== 5 || Math.abs(g.get("b")![0] - 0.8) > 1e-6) throw new Error();
 * ```
 * @param grads Gradients, scaled in place.
 * @param maxNorm Largest allowed norm; Infinity or 0 disables clipping.
 * @returns The norm before clipping.
 */
export function clipGradNorm(grads: ReadonlyMap<string, Float32Array>, maxNorm: number): number {
  let sum = 0;
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  const norm = Math.sqrt(sum);
  if (maxNorm > 0 && norm > maxNorm) {
    const scale = maxNorm / norm;
    for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] *= scale;
  }
  return norm;
}
