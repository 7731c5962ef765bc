/**
 * GPU storage of the WebGPU backward pass: the weights (uploaded once, matrices as row
 * chunks) and the activations of one sequence (allocated for its length and reused).
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import { type ModelConfig, tensorNames } from "./config.ts";
import type { WeightStore } from "./model.ts";
import { ShapeError } from "../errors.ts";
import { type GpuMatrix, releaseMatrix, uploadMatrix } from "../ops/gpu_matrix.ts";
import type { BlockLinear } from "./reference_backward.ts";

/** Weights of one block. */
export interface BlockWeights {
  /** Attention RMSNorm weight, f32 [dim]. */
  attnNorm: GPUBuffer;
  /** Feed-forward RMSNorm weight, f32 [dim]. */
  ffnNorm: GPUBuffer;
  /** Linear weights by name, each [out, in]. */
  linears: Record<BlockLinear, GpuMatrix>;
  /** Q, K, V biases, f32 [qDim], [kvDim], [kvDim], or null unless qkvBias. */
  bias: { q: GPUBuffer; k: GPUBuffer; v: GPUBuffer } | null;
}

/** All weights on the GPU. */
export interface TrainWeights {
  /** Token embedding [vocab, dim]. */
  embed: GpuMatrix;
  /** Output head [vocab, dim], the same object as `embed` when tied. */
  head: GpuMatrix;
  /** Head transposed [dim, vocab], or null unless requested. */
  headT: GpuMatrix | null;
  /** Final RMSNorm weight, f32 [dim]. */
  finalNorm: GPUBuffer;
  /** Weights of each block, in layer order. */
  blocks: BlockWeights[];
}

/**
 * Uploads every weight of `config` from `weights`, one tensor at a time.
 *
 * @param gpu Device.
 * @param config Hyperparameters.
 * @param weights Tensor store under canonical names.
 * @param options `maxChunkBytes` caps one matrix chunk (tests lower it to force chunking);
 *   `transposedHead` also uploads the head transposed.
 */
export async function uploadTrainWeights(
  gpu: GpuContext,
  config: ModelConfig,
  weights: WeightStore,
  options: { maxChunkBytes?: number; transposedHead?: boolean } = {},
): Promise<TrainWeights> {
  const { maxChunkBytes } = options;
  const matrix = async (name: string, rows: number, cols: number) =>
    uploadMatrix(gpu, await read(weights, name, rows * cols), rows, cols, name, maxChunkBytes);
  const vector = async (name: string, n: number) => gpu.upload(await read(weights, name, n), name);
  const { dim, hiddenDim, vocabSize } = config;
  const q = config.nHeads * config.headDim, kv = config.nKvHeads * config.headDim;
  const embed = await matrix(tensorNames.embed, vocabSize, dim);
  const head = config.tiedEmbeddings ? embed : await matrix(tensorNames.lmHead, vocabSize, dim);
  const blocks: BlockWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const lin = (which: BlockLinear, rows: number, cols: number) =>
      matrix(tensorNames.linear(l, which), rows, cols);
    blocks.push({
      attnNorm: await vector(tensorNames.attnNorm(l), dim),
      ffnNorm: await vector(tensorNames.ffnNorm(l), dim),
      linears: {
        "self_attn.q_proj": await lin("self_attn.q_proj", q, dim),
        "self_attn.k_proj": await lin("self_attn.k_proj", kv, dim),
        "self_attn.v_proj": await lin("self_attn.v_proj", kv, dim),
        "self_attn.o_proj": await lin("self_attn.o_proj", dim, q),
        "mlp.gate_proj": await lin("mlp.gate_proj", hiddenDim, dim),
        "mlp.up_proj": await lin("mlp.up_proj", hiddenDim, dim),
        "mlp.down_proj": await lin("mlp.down_proj", dim, hiddenDim),
      },
      bias: config.qkvBias
        ? {
          q: await vector(tensorNames.bias(l, "self_attn.q_proj"), q),
          k: await vector(tensorNames.bias(l, "self_attn.k_proj"), kv),
          v: await vector(tensorNames.bias(l, "self_attn.v_proj"), kv),
        }
        : null,
    });
  }
  let headT: GpuMatrix | null = null;
  if (options.transposedHead) {
    const h = await read(
      weights,
      config.tiedEmbeddings ? tensorNames.embed : tensorNames.lmHead,
      vocabSize * dim,
    );
    const t = new Float32Array(dim * vocabSize); // [dim, vocab]
    for (let v = 0; v < vocabSize; v++) {
      for (let i = 0; i < dim; i++) t[i * vocabSize + v] = h[v * dim + i];
    }
    headT = uploadMatrix(gpu, t, dim, vocabSize, "head transposed", maxChunkBytes);
  }
  return { embed, head, headT, finalNorm: await vector(tensorNames.finalNorm, dim), blocks };
}

/**
 * Frees the weights' buffers.
 *
 * @param gpu Device that owns them.
 * @param w Weights.
 */
export function releaseTrainWeights(gpu: GpuContext, w: TrainWeights): void {
  releaseMatrix(gpu, w.embed);
  if (w.head !== w.embed) releaseMatrix(gpu, w.head);
  if (w.headT) releaseMatrix(gpu, w.headT);
  gpu.release(w.finalNorm);
  for (const b of w.blocks) {
    gpu.release(b.attnNorm);
    gpu.release(b.ffnNorm);
    for (const m of Object.values(b.linears)) releaseMatrix(gpu, m);
    if (b.bias) { for (const v of Object.values(b.bias)) gpu.release(v); }
  }
}

async function read(weights: WeightStore, name: string, count: number): Promise<Float32Array> {
  const data = await weights.read(name);
  if (data.length !== count) {
    throw new ShapeError(
      `${weights.source}: ${name} contains ${data.length} values, expected ${count}`,
    );
  }
  return data;
}

/** Activations one block saves for its backward pass, each [T, width]. */
export interface BlockActivations {
  x: GPUBuffer; // block input [T, dim]
  xn1: GPUBuffer; // attention-normed input [T, dim]
  q: GPUBuffer; // rotated queries [T, qDim]
  k: GPUBuffer; // rotated keys [T, kvDim]
  v: GPUBuffer; // values [T, kvDim]
  att: GPUBuffer; // attention output [T, qDim]
  x2: GPUBuffer; // residual after attention [T, dim]
  xn2: GPUBuffer; // feed-forward-normed input [T, dim]
  g: GPUBuffer; // gate projection [T, hidden], replaced by dg in the backward pass
  u: GPUBuffer; // up projection [T, hidden], replaced by du
  h: GPUBuffer; // silu(g) * u [T, hidden]
}

/** Every buffer of one sequence of T tokens. */
export interface SequenceBuffers {
  T: number;
  ids: GPUBuffer; // [T] u32
  losses: GPUBuffer; // [T] per-position loss
  rstd: GPUBuffer; // [T] RMSNorm scale of the norm being differentiated
  blocks: BlockActivations[];
  xFinal: GPUBuffer; // [T, dim] last residual
  xnFinal: GPUBuffer; // [T, dim] final-normed
  logitRows: number; // rows of the logits chunk
  logits: GPUBuffer; // [logitRows, vocab] logits, then their gradient
  dx: GPUBuffer; // [T, dim] gradient of the residual stream
  dx2: GPUBuffer; // [T, dim] gradient of the residual after attention
  dxn: GPUBuffer; // [T, dim] gradient of a normed input
  dh: GPUBuffer; // [T, hidden]
  dq: GPUBuffer; // [T, qDim]
  dk: GPUBuffer; // [T, kvDim]
  dv: GPUBuffer; // [T, kvDim]
  datt: GPUBuffer; // [T, qDim]
  scores: GPUBuffer; // [T, T] one head's scores, then probabilities
  dp: GPUBuffer; // [T, T] one head's dP, then dS
}

/**
 * Allocates the buffers of a sequence of T tokens.
 *
 * @param gpu Device.
 * @param c Hyperparameters.
 * @param T Tokens.
 */
export function allocateSequence(gpu: GpuContext, c: ModelConfig, T: number): SequenceBuffers {
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  const f = (n: number, label: string) => gpu.createBuffer(4 * n, label);
  const blocks: BlockActivations[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    blocks.push({
      x: f(T * c.dim, "x"),
      xn1: f(T * c.dim, "xn1"),
      q: f(T * q, "q"),
      k: f(T * kv, "k"),
      v: f(T * kv, "v"),
      att: f(T * q, "att"),
      x2: f(T * c.dim, "x2"),
      xn2: f(T * c.dim, "xn2"),
      g: f(T * c.hiddenDim, "g"),
      u: f(T * c.hiddenDim, "u"),
      h: f(T * c.hiddenDim, "h"),
    });
  }
  // logits are produced and differentiated in row chunks that fit one storage binding
  const logitRows = Math.max(
    1,
    Math.min(T, Math.floor(gpu.limits.maxStorageBufferBindingSize / (4 * c.vocabSize))),
  );
  return {
    T,
    ids: f(T, "ids"),
    losses: f(T, "losses"),
    rstd: f(T, "rstd"),
    blocks,
    xFinal: f(T * c.dim, "xFinal"),
    xnFinal: f(T * c.dim, "xnFinal"),
    logitRows,
    logits: f(logitRows * c.vocabSize, "logits"),
    dx: f(T * c.dim, "dx"),
    dx2: f(T * c.dim, "dx2"),
    dxn: f(T * c.dim, "dxn"),
    dh: f(T * c.hiddenDim, "dh"),
    dq: f(T * q, "dq"),
    dk: f(T * kv, "dk"),
    dv: f(T * kv, "dv"),
    datt: f(T * q, "datt"),
    scores: f(T * T, "scores"),
    dp: f(T * T, "dp"),
  };
}

/**
 * Frees a sequence's buffers.
 *
 * @param gpu Device that owns them.
 * @param s Buffers.
 */
export function releaseSequence(gpu: GpuContext, s: SequenceBuffers): void {
  const { blocks, T: _T, logitRows: _r, ...rest } = s;
  for (const b of blocks) for (const buf of Object.values(b)) gpu.release(buf);
  for (const buf of Object.values(rest)) gpu.release(buf as GPUBuffer);
}
