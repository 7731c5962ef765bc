/**
 * Plain TypeScript forward pass over one whole sequence that keeps its activations, and
 * the backward pass of the mean next-token cross-entropy through it, in double precision.
 * It is the reference the WebGPU backward pass and the calibration statistics are tested
 * against, and it runs calibration on its own for small models.
 *
 * Memory: one sequence's activations (about T * (8 dim + 4 hidden + heads * T) doubles
 * per layer, plus T * vocab for the logits), released after each call.
 *
 * @module
 */
import { type BLOCK_LINEARS, type ModelConfig, tensorNames } from "./config.ts";
import { readAllWeights, type WeightStore } from "./model.ts";
import { ShapeError, UsageError } from "../errors.ts";
import { linearBackward64, linearForward64 } from "../ops/linear_backward.ts";
import { rmsnormBackward64, rmsnormForward64 } from "../ops/rmsnorm_backward.ts";
import { ropeBackward64, ropeForward64, type RopeParams } from "../ops/rope_backward.ts";
import {
  attentionBackward64,
  attentionForward64,
  type AttentionParams,
} from "../ops/attention_backward.ts";
import { swigluBackward64, swigluForward64 } from "../ops/swiglu_backward.ts";
import { crossEntropy64 } from "../ops/cross_entropy_backward.ts";
import { embeddingBackward64, embeddingForward64 } from "../ops/embedding_backward.ts";

/** One linear layer of a block, by its Hugging Face suffix. */
export type BlockLinear = typeof BLOCK_LINEARS[number];

/** Input and output gradient of one linear layer on one sequence, handed to a tap. */
export interface LinearTap {
  /** Block index. */
  layer: number;
  /** The block's linear layer. */
  linear: BlockLinear;
  /** Layer input x [T, in]. */
  x: Float64Array;
  /** Output gradient delta = dLoss/dy [T, out]. */
  dy: Float64Array;
  /** Weight gradient of this sequence g = dy^T x [out, in]. */
  dw: Float64Array;
  /** Tokens T. */
  T: number;
  /** Input width (in). */
  inDim: number;
  /** Output width (out). */
  outDim: number;
}

/** Options of {@linkcode ReferenceBackward.backward}. */
export interface BackwardOptions {
  /** Called once per linear layer during the backward pass, last layer first. */
  onLinear?: (tap: LinearTap) => void;
  /**
   * Backpropagate labels drawn from the model's own distribution with this seed instead
   * of the next tokens (src/ops/cross_entropy_backward.ts); the loss still scores the next
   * tokens. Default null.
   */
  labelSeed?: number | null;
}

/** Result of one forward and backward pass. */
export interface BackwardResult {
  /** Mean next-token cross-entropy of the sequence (nats). */
  loss: number;
  /** Gradient of the loss for every tensor, by canonical name, same shapes as the weights. */
  grads: Map<string, Float64Array>;
}

/** Activations of one block saved by the forward pass, each [T, width]. */
interface BlockActivations {
  x: Float64Array; // block input (residual) [T, dim]
  xn1: Float64Array; // attention-normed input [T, dim]
  q: Float64Array; // rotated queries [T, heads * headDim]
  k: Float64Array; // rotated keys [T, kvHeads * headDim]
  v: Float64Array; // values [T, kvHeads * headDim]
  probs: Float64Array; // attention probabilities [heads, T, T]
  att: Float64Array; // attention output [T, heads * headDim]
  x2: Float64Array; // residual after attention [T, dim]
  xn2: Float64Array; // feed-forward-normed input [T, dim]
  g: Float64Array; // gate projection [T, hidden]
  u: Float64Array; // up projection [T, hidden]
  h: Float64Array; // silu(g) * u [T, hidden]
}

/**
 * The double-precision reference of the training-mode forward and backward pass.
 *
 * @example Loss and gradients of one sequence
 * ```ts ignore
 * const ref = await ReferenceBackward.create(model.config, model.weights);
 * const { loss, grads } = ref.backward([1, 5, 9, 2]);
 * console.log(loss, grads.get("model.layers.0.self_attn.q_proj.weight"));
 * ```
 */
export class ReferenceBackward {
  /** Hyperparameters. */
  readonly config: ModelConfig;
  /** Weights in f64 by canonical name; tests perturb them in place for finite differences. */
  readonly weights: Map<string, Float64Array>;

  private constructor(config: ModelConfig, weights: Map<string, Float64Array>) {
    this.config = config;
    this.weights = weights;
  }

  /**
   * Reads every weight and converts it to f64.
   *
   * @param config Hyperparameters.
   * @param weights Tensor store or in-memory tensors under canonical names.
   */
  static async create(
    config: ModelConfig,
    weights: WeightStore | Map<string, Float32Array>,
  ): Promise<ReferenceBackward> {
    const all = weights instanceof Map ? weights : await readAllWeights(weights);
    const w64 = new Map<string, Float64Array>();
    for (const [name, data] of all) w64.set(name, Float64Array.from(data));
    return new ReferenceBackward(config, w64);
  }

  /**
   * Runs the forward pass and returns the mean next-token cross-entropy.
   *
   * @param tokens Token ids of one sequence at positions 0..T-1 (2 <= T <= maxSeqLen).
   */
  loss(tokens: ArrayLike<number>): number {
    const { logits } = this.#forward(tokens);
    return crossEntropy64(logits, tokens, this.config.vocabSize).loss;
  }

  /**
   * Returns the logits [T, vocab] of a forward pass (f64).
   *
   * @param tokens Token ids at positions 0..T-1.
   */
  logits(tokens: ArrayLike<number>): Float64Array {
    return this.#forward(tokens).logits;
  }

  /**
   * Runs the forward pass, keeps its activations, and backpropagates the mean
   * next-token cross-entropy to every weight.
   *
   * @param tokens Token ids of one sequence at positions 0..T-1 (2 <= T <= maxSeqLen).
   * @param options Per-linear tap.
   */
  backward(tokens: ArrayLike<number>, options: BackwardOptions = {}): BackwardResult {
    const c = this.config, w = this.weights, T = tokens.length;
    const { acts, xFinal, xnFinal, logits } = this.#forward(tokens);
    const grads = new Map<string, Float64Array>();
    const add = (name: string, g: Float64Array) => {
      const prev = grads.get(name);
      if (!prev) grads.set(name, g);
      else for (let i = 0; i < g.length; i++) prev[i] += g[i];
    };

    // cross-entropy, then the head: logits = xnFinal H^T
    const { loss, dLogits } = crossEntropy64(
      logits,
      tokens,
      c.vocabSize,
      options.labelSeed ?? null,
    );
    const headName = c.tiedEmbeddings ? tensorNames.embed : tensorNames.lmHead;
    const head = linearBackward64(xnFinal, dLogits, T, c.dim, w.get(headName)!, c.vocabSize);
    add(headName, head.dw);

    // final norm
    const fin = rmsnormBackward64(
      xFinal,
      head.dx,
      T,
      c.dim,
      w.get(tensorNames.finalNorm)!,
      c.normEps,
    );
    add(tensorNames.finalNorm, fin.dw);
    let dx = fin.dx;

    for (let l = c.nLayers - 1; l >= 0; l--) {
      dx = this.#blockBackward(l, acts[l], dx, T, add, options);
    }

    // token embedding: scatter-add dx into the rows of the tokens
    const dEmbed = new Float64Array(c.vocabSize * c.dim);
    embeddingBackward64(dEmbed, dx, c.dim, tokens);
    add(tensorNames.embed, dEmbed);
    return { loss, grads };
  }

  #forward(tokens: ArrayLike<number>) {
    const c = this.config, w = this.weights, T = tokens.length;
    if (T < 2 || T > c.maxSeqLen) {
      throw new UsageError(
        `Sequence of ${T} tokens: expected between 2 and the model's context ${c.maxSeqLen}`,
      );
    }
    for (let t = 0; t < T; t++) {
      if (!(Number.isInteger(tokens[t]) && tokens[t] >= 0 && tokens[t] < c.vocabSize)) {
        throw new UsageError(
          `Token id ${tokens[t]} at position ${t} is outside the vocabulary [0, ${c.vocabSize})`,
        );
      }
    }
    let x = embeddingForward64(w.get(tensorNames.embed)!, c.dim, tokens);
    const acts: BlockActivations[] = [];
    for (let l = 0; l < c.nLayers; l++) {
      const a = this.#blockForward(l, x, T);
      acts.push(a);
      x = residual(
        a.x2,
        linearForward64(a.h, T, c.hiddenDim, this.#linear(l, "mlp.down_proj"), c.dim),
      );
    }
    const xnFinal = rmsnormForward64(x, T, c.dim, w.get(tensorNames.finalNorm)!, c.normEps);
    const head = w.get(c.tiedEmbeddings ? tensorNames.embed : tensorNames.lmHead)!;
    const logits = linearForward64(xnFinal, T, c.dim, head, c.vocabSize);
    return { acts, xFinal: x, xnFinal, logits };
  }

  #blockForward(l: number, x: Float64Array, T: number): BlockActivations {
    const c = this.config, w = this.weights;
    const qw = c.nHeads * c.headDim, kw = c.nKvHeads * c.headDim;

    // attention: q, k, v projections of the normed residual, rotary, causal GQA
    const xn1 = rmsnormForward64(x, T, c.dim, w.get(tensorNames.attnNorm(l))!, c.normEps);
    const q = ropeForward64(
      linearForward64(
        xn1,
        T,
        c.dim,
        this.#linear(l, "self_attn.q_proj"),
        qw,
        this.#bias(l, "self_attn.q_proj"),
      ),
      T,
      this.#rope(c.nHeads),
    );
    const k = ropeForward64(
      linearForward64(
        xn1,
        T,
        c.dim,
        this.#linear(l, "self_attn.k_proj"),
        kw,
        this.#bias(l, "self_attn.k_proj"),
      ),
      T,
      this.#rope(c.nKvHeads),
    );
    const v = linearForward64(
      xn1,
      T,
      c.dim,
      this.#linear(l, "self_attn.v_proj"),
      kw,
      this.#bias(l, "self_attn.v_proj"),
    );
    const { out: att, probs } = attentionForward64(q, k, v, T, this.#heads());
    const x2 = residual(x, linearForward64(att, T, qw, this.#linear(l, "self_attn.o_proj"), c.dim));

    // feed-forward: SwiGLU of the normed residual (down projection applied by the caller)
    const xn2 = rmsnormForward64(x2, T, c.dim, w.get(tensorNames.ffnNorm(l))!, c.normEps);
    const g = linearForward64(xn2, T, c.dim, this.#linear(l, "mlp.gate_proj"), c.hiddenDim);
    const u = linearForward64(xn2, T, c.dim, this.#linear(l, "mlp.up_proj"), c.hiddenDim);
    const h = swigluForward64(g, u);
    return { x, xn1, q, k, v, probs, att, x2, xn2, g, u, h };
  }

  /** Backpropagates dOut (gradient of the block's output) and returns the block input's gradient. */
  #blockBackward(
    l: number,
    a: BlockActivations,
    dOut: Float64Array,
    T: number,
    add: (name: string, g: Float64Array) => void,
    options: BackwardOptions,
  ): Float64Array {
    const c = this.config, w = this.weights;
    const qw = c.nHeads * c.headDim, kw = c.nKvHeads * c.headDim;
    const linear = (
      which: BlockLinear,
      x: Float64Array,
      dy: Float64Array,
      inDim: number,
      outDim: number,
    ) => {
      const r = linearBackward64(x, dy, T, inDim, this.#linear(l, which), outDim);
      add(tensorNames.linear(l, which), r.dw);
      if (
        c.qkvBias &&
        (which === "self_attn.q_proj" || which === "self_attn.k_proj" ||
          which === "self_attn.v_proj")
      ) {
        add(tensorNames.bias(l, which), r.db);
      }
      options.onLinear?.({ layer: l, linear: which, x, dy, dw: r.dw, T, inDim, outDim });
      return r.dx;
    };

    // feed-forward: x3 = x2 + down(silu(gate(xn2)) * up(xn2)), xn2 = rmsnorm(x2)
    const dh = linear("mlp.down_proj", a.h, dOut, c.hiddenDim, c.dim);
    const { dg, du } = swigluBackward64(a.g, a.u, dh);
    const dxn2 = residual(
      linear("mlp.gate_proj", a.xn2, dg, c.dim, c.hiddenDim),
      linear("mlp.up_proj", a.xn2, du, c.dim, c.hiddenDim),
    );
    const n2 = rmsnormBackward64(a.x2, dxn2, T, c.dim, w.get(tensorNames.ffnNorm(l))!, c.normEps);
    add(tensorNames.ffnNorm(l), n2.dw);
    const dx2 = residual(dOut, n2.dx);

    // attention: x2 = x + o_proj(attention(rope(q_proj(xn1)), rope(k_proj(xn1)), v_proj(xn1)))
    const dAtt = linear("self_attn.o_proj", a.att, dx2, qw, c.dim);
    const { dq, dk, dv } = attentionBackward64(a.q, a.k, a.v, a.probs, dAtt, T, this.#heads());
    const dqPre = ropeBackward64(dq, T, this.#rope(c.nHeads));
    const dkPre = ropeBackward64(dk, T, this.#rope(c.nKvHeads));
    const dxn1 = linear("self_attn.q_proj", a.xn1, dqPre, c.dim, qw);
    const dxn1k = linear("self_attn.k_proj", a.xn1, dkPre, c.dim, kw);
    const dxn1v = linear("self_attn.v_proj", a.xn1, dv, c.dim, kw);
    for (let i = 0; i < dxn1.length; i++) dxn1[i] += dxn1k[i] + dxn1v[i];
    const n1 = rmsnormBackward64(a.x, dxn1, T, c.dim, w.get(tensorNames.attnNorm(l))!, c.normEps);
    add(tensorNames.attnNorm(l), n1.dw);
    return residual(dx2, n1.dx);
  }

  #linear(l: number, which: BlockLinear): Float64Array {
    const t = this.weights.get(tensorNames.linear(l, which));
    if (!t) throw new ShapeError(`Missing weight ${tensorNames.linear(l, which)}`);
    return t;
  }

  #bias(
    l: number,
    which: "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj",
  ): Float64Array | undefined {
    return this.config.qkvBias ? this.weights.get(tensorNames.bias(l, which)) : undefined;
  }

  #rope(heads: number): RopeParams {
    const c = this.config;
    return { heads, headDim: c.headDim, theta: c.ropeTheta, style: c.ropeStyle };
  }

  #heads(): AttentionParams {
    return {
      heads: this.config.nHeads,
      kvHeads: this.config.nKvHeads,
      headDim: this.config.headDim,
    };
  }
}

/** Returns a + b elementwise as a new array. */
function residual(a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}
