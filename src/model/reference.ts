/**
 * Plain TypeScript forward pass, the reference the WebGPU path is tested against. It
 * follows llama2.c's `run.c` token by token (RMSNorm, rotary embedding, grouped-query
 * causal attention, SwiGLU), with f64 accumulation and f32 storage, and adds the
 * Hugging Face variants: half-split rotary pairs, q/k/v biases and an untied head.
 *
 * @module
 */
import type { ModelConfig } from "./config.ts";
import { tensorNames } from "./config.ts";
import type { CausalLM, ForwardOptions } from "./causal_lm.ts";
import { readAllWeights, type WeightStore } from "./model.ts";
import { UsageError } from "../errors.ts";

/**
 * out[r] = sum_c w[r, c] * x[c] (+ bias[r]); w is [rows, cols] row-major.
 *
 * @param out Output, length rows.
 * @param w Weights [rows, cols].
 * @param x Input, length cols.
 * @param bias Optional bias, length rows.
 */
export function matvec(
  out: Float32Array,
  w: Float32Array,
  x: Float32Array,
  bias?: Float32Array,
): void {
  const cols = x.length;
  for (let r = 0; r < out.length; r++) {
    let sum = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) sum += w[base + c] * x[c];
    out[r] = bias ? sum + bias[r] : sum;
  }
}

/**
 * RMSNorm: out = x / sqrt(mean(x^2) + eps) * weight.
 *
 * @param out Output, same length as x.
 * @param x Input vector.
 * @param weight Per-element gain.
 * @param eps Epsilon added to the mean square.
 */
export function rmsnorm(
  out: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  eps: number,
): void {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const scale = 1 / Math.sqrt(ss / x.length + eps);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * scale * weight[i];
}

/**
 * Rotates each head of `v` (nHeads heads of headDim) in place by position `pos`.
 *
 * @param v Vector [nHeads * headDim].
 * @param headDim Head width (even).
 * @param pos Token position.
 * @param theta Rotary base.
 * @param style "adjacent" pairs (2i, 2i+1), "half" pairs (i, i + headDim/2).
 */
export function applyRope(
  v: Float32Array,
  headDim: number,
  pos: number,
  theta: number,
  style: "adjacent" | "half",
): void {
  const half = headDim / 2;
  for (let h = 0; h < v.length / headDim; h++) {
    for (let j = 0; j < half; j++) {
      // Pair j rotates at frequency theta^(-2j / headDim), as run.c and Hugging Face define it.
      const angle = pos * Math.pow(theta, -(2 * j) / headDim);
      const cos = Math.cos(angle), sin = Math.sin(angle);
      const a = style === "adjacent" ? h * headDim + 2 * j : h * headDim + j;
      const b = style === "adjacent" ? a + 1 : a + half;
      const x0 = v[a], x1 = v[b];
      v[a] = x0 * cos - x1 * sin;
      v[b] = x0 * sin + x1 * cos;
    }
  }
}

/**
 * In-place softmax over the first `n` elements.
 *
 * @param x Scores.
 * @param n Number of elements to normalise.
 */
export function softmax(x: Float32Array, n = x.length): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    x[i] = Math.exp(x[i] - max);
    sum += x[i];
  }
  for (let i = 0; i < n; i++) x[i] /= sum;
}

/** Scratch buffers of one forward step, sized once from the config. */
class RunState {
  x: Float32Array; // [dim] residual stream
  xb: Float32Array; // [dim] normed input
  q: Float32Array; // [nHeads * headDim]
  k: Float32Array; // [nKvHeads * headDim]
  v: Float32Array; // [nKvHeads * headDim]
  att: Float32Array; // [nHeads * headDim] attention output
  proj: Float32Array; // [dim]
  h1: Float32Array; // [hidden]
  h3: Float32Array; // [hidden]
  scores: Float32Array; // [maxSeqLen]
  keyCache: Float32Array; // [layers, maxSeqLen, kvDim]
  valueCache: Float32Array; // [layers, maxSeqLen, kvDim]

  constructor(c: ModelConfig) {
    const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
    this.x = new Float32Array(c.dim);
    this.xb = new Float32Array(c.dim);
    this.q = new Float32Array(qDim);
    this.k = new Float32Array(kvDim);
    this.v = new Float32Array(kvDim);
    this.att = new Float32Array(qDim);
    this.proj = new Float32Array(c.dim);
    this.h1 = new Float32Array(c.hiddenDim);
    this.h3 = new Float32Array(c.hiddenDim);
    this.scores = new Float32Array(c.maxSeqLen);
    this.keyCache = new Float32Array(c.nLayers * c.maxSeqLen * kvDim);
    this.valueCache = new Float32Array(c.nLayers * c.maxSeqLen * kvDim);
  }
}

/**
 * The TypeScript reference decoder. Holds all weights in memory.
 *
 * @example Greedy next token
 * ```ts ignore
 * const lm = await ReferenceModel.create(model.config, model.weights);
 * const logits = await lm.forward([1], { lastOnly: true });
 * ```
 */
export class ReferenceModel implements CausalLM {
  readonly config: ModelConfig;
  #w: Map<string, Float32Array>;
  #s: RunState;
  #pos = 0;

  private constructor(config: ModelConfig, weights: Map<string, Float32Array>) {
    this.config = config;
    this.#w = weights;
    this.#s = new RunState(config);
  }

  /**
   * Reads every weight of `weights` and builds the reference model.
   *
   * @param config Hyperparameters.
   * @param weights Tensor store under canonical names.
   */
  static async create(
    config: ModelConfig,
    weights: WeightStore | Map<string, Float32Array>,
  ): Promise<ReferenceModel> {
    const all = weights instanceof Map ? weights : await readAllWeights(weights);
    return new ReferenceModel(config, all);
  }

  get position(): number {
    return this.#pos;
  }

  reset(): void {
    this.#pos = 0;
  }

  forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): Promise<Float32Array> {
    const V = this.config.vocabSize;
    const out = new Float32Array(options.lastOnly ? V : tokens.length * V);
    for (let t = 0; t < tokens.length; t++) {
      const logits = this.step(tokens[t]);
      if (!options.lastOnly) out.set(logits, t * V);
      else if (t === tokens.length - 1) out.set(logits);
    }
    return Promise.resolve(out);
  }

  truncate(position: number): void {
    if (!(Number.isSafeInteger(position) && position >= 0 && position <= this.#pos)) {
      throw new UsageError(`Cannot truncate the KV cache to ${position}: expected 0..${this.#pos}`);
    }
    // Cache rows are written per position, so the rows before `position` stay valid.
    this.#pos = position;
  }

  dispose(): void {}

  /**
   * Runs one token at the current position and returns its logits [vocab].
   *
   * @param token Token id.
   */
  step(token: number): Float32Array {
    const c = this.config, s = this.#s, w = this.#w;
    const pos = this.#pos;
    if (pos >= c.maxSeqLen) {
      throw new UsageError(
        `Context is full: position ${pos} reaches the model's maxSeqLen ${c.maxSeqLen}`,
      );
    }
    if (!(token >= 0 && token < c.vocabSize)) {
      throw new UsageError(`Token id ${token} is outside the vocabulary [0, ${c.vocabSize})`);
    }

    // token embedding: x = embed[token]
    s.x.set(w.get(tensorNames.embed)!.subarray(token * c.dim, (token + 1) * c.dim));

    for (let l = 0; l < c.nLayers; l++) {
      this.#attention(l, pos);
      this.#feedForward(l);
    }

    // final norm and classifier: logits = head @ rmsnorm(x)
    rmsnorm(s.xb, s.x, w.get(tensorNames.finalNorm)!, c.normEps);
    const head = w.get(c.tiedEmbeddings ? tensorNames.embed : tensorNames.lmHead)!;
    const logits = new Float32Array(c.vocabSize);
    matvec(logits, head, s.xb);
    this.#pos++;
    return logits;
  }

  #attention(l: number, pos: number): void {
    const c = this.config, s = this.#s, w = this.#w;
    const kvDim = c.nKvHeads * c.headDim;
    const bias = (which: "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj") =>
      c.qkvBias ? w.get(tensorNames.bias(l, which)) : undefined;

    // q, k, v projections of the normed residual
    rmsnorm(s.xb, s.x, w.get(tensorNames.attnNorm(l))!, c.normEps);
    matvec(s.q, w.get(tensorNames.linear(l, "self_attn.q_proj"))!, s.xb, bias("self_attn.q_proj"));
    matvec(s.k, w.get(tensorNames.linear(l, "self_attn.k_proj"))!, s.xb, bias("self_attn.k_proj"));
    matvec(s.v, w.get(tensorNames.linear(l, "self_attn.v_proj"))!, s.xb, bias("self_attn.v_proj"));

    // rotary embedding of q and k, then append k, v to the cache
    applyRope(s.q, c.headDim, pos, c.ropeTheta, c.ropeStyle);
    applyRope(s.k, c.headDim, pos, c.ropeTheta, c.ropeStyle);
    const cacheBase = l * c.maxSeqLen * kvDim;
    s.keyCache.set(s.k, cacheBase + pos * kvDim);
    s.valueCache.set(s.v, cacheBase + pos * kvDim);

    // causal attention: each query head h reads key/value head h / (nHeads / nKvHeads)
    const group = c.nHeads / c.nKvHeads;
    const scale = 1 / Math.sqrt(c.headDim);
    for (let h = 0; h < c.nHeads; h++) {
      const qOff = h * c.headDim, kvOff = Math.floor(h / group) * c.headDim;
      for (let t = 0; t <= pos; t++) {
        const kBase = cacheBase + t * kvDim + kvOff;
        let dot = 0;
        for (let i = 0; i < c.headDim; i++) dot += s.q[qOff + i] * s.keyCache[kBase + i];
        s.scores[t] = dot * scale;
      }
      softmax(s.scores, pos + 1);
      for (let i = 0; i < c.headDim; i++) {
        let sum = 0;
        for (let t = 0; t <= pos; t++) {
          sum += s.scores[t] * s.valueCache[cacheBase + t * kvDim + kvOff + i];
        }
        s.att[qOff + i] = sum;
      }
    }

    // output projection and residual: x += Wo @ att
    matvec(s.proj, w.get(tensorNames.linear(l, "self_attn.o_proj"))!, s.att);
    for (let i = 0; i < c.dim; i++) s.x[i] += s.proj[i];
  }

  #feedForward(l: number): void {
    const c = this.config, s = this.#s, w = this.#w;

    // SwiGLU: x += W_down @ (silu(W_gate @ xb) * (W_up @ xb))
    rmsnorm(s.xb, s.x, w.get(tensorNames.ffnNorm(l))!, c.normEps);
    matvec(s.h1, w.get(tensorNames.linear(l, "mlp.gate_proj"))!, s.xb);
    matvec(s.h3, w.get(tensorNames.linear(l, "mlp.up_proj"))!, s.xb);
    for (let i = 0; i < c.hiddenDim; i++) {
      const g = s.h1[i];
      s.h1[i] = (g / (1 + Math.exp(-g))) * s.h3[i];
    }
    matvec(s.proj, w.get(tensorNames.linear(l, "mlp.down_proj"))!, s.h1);
    for (let i = 0; i < c.dim; i++) s.x[i] += s.proj[i];
  }
}
