/**
 * The GPU-resident state of {@linkcode GpuModel}: its weights, uploaded one tensor at a
 * time, and the buffers one forward pass works in (activations, KV cache, rotary table).
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import { expectedTensors, type ModelConfig, tensorNames } from "./config.ts";
import type { WeightStore } from "./model.ts";
import { GpuError, ShapeError, UsageError } from "../errors.ts";
import { Progress } from "../util/progress.ts";
import { attentionScratchBytes } from "../ops/attention.ts";
import { type GpuMatrix, releaseMatrix, uploadMatrix } from "../ops/gpu_matrix.ts";
import { ropeTable } from "../ops/rope.ts";
import { CodebookCache, QuantizedLinear } from "../ops/quantized_linear.ts";

/** A linear layer's weight on the GPU: dense f32 row chunks, or the packed codes of a quantized file. */
export type LinearWeight = GpuMatrix | QuantizedLinear;

/** Weights of one transformer block on the GPU. */
export interface BlockWeights {
  /** Attention RMSNorm weight, f32 [dim]. */
  attnNorm: GPUBuffer;
  /** Query projection [nHeads * headDim, dim]. */
  wq: LinearWeight;
  /** Key projection [nKvHeads * headDim, dim]. */
  wk: LinearWeight;
  /** Value projection [nKvHeads * headDim, dim]. */
  wv: LinearWeight;
  /** Attention output projection [dim, nHeads * headDim]. */
  wo: LinearWeight;
  /** Query bias, f32 [nHeads * headDim], or null unless qkvBias. */
  bq: GPUBuffer | null;
  /** Key bias, f32 [nKvHeads * headDim], or null unless qkvBias. */
  bk: GPUBuffer | null;
  /** Value bias, f32 [nKvHeads * headDim], or null unless qkvBias. */
  bv: GPUBuffer | null;
  /** Feed-forward RMSNorm weight, f32 [dim]. */
  ffnNorm: GPUBuffer;
  /** Gate projection [hiddenDim, dim]. */
  wGate: LinearWeight;
  /** Up projection [hiddenDim, dim]. */
  wUp: LinearWeight;
  /** Down projection [dim, hiddenDim]. */
  wDown: LinearWeight;
}

/** Activations of one pass of up to `tokens` rows, and the KV cache. */
export interface RunBuffers {
  tokens: number; // rows per pass
  ids: GPUBuffer; // [contextLength] u32 token ids of the current call
  x: GPUBuffer; // [tokens, dim] residual stream
  xb: GPUBuffer; // [tokens, dim] normed input
  q: GPUBuffer; // [tokens, nHeads * headDim]
  att: GPUBuffer; // [tokens, nHeads * headDim] attention output
  gate: GPUBuffer; // [tokens, hiddenDim] gate projection, then the SwiGLU activation
  up: GPUBuffer; // [tokens, hiddenDim]
  logits: GPUBuffer; // [tokens, vocabSize]
  scratch: GPUBuffer; // attention partial states
  ropeTable: GPUBuffer; // [contextLength, headDim / 2, 2]
  keyCache: GPUBuffer[]; // per layer [contextLength, nKvHeads * headDim], rotated keys
  valueCache: GPUBuffer[]; // per layer [contextLength, nKvHeads * headDim]
}

/** Every weight of the model on the GPU. */
export interface ModelWeights {
  embed: GpuMatrix; // [vocabSize, dim]
  head: LinearWeight; // [vocabSize, dim]; the embedding itself when tied
  finalNorm: GPUBuffer; // [dim]
  blocks: BlockWeights[];
  codebooks: CodebookCache | null; // codebooks shared by the quantized layers
}

/**
 * Checks that every tensor the config implies has the expected shape.
 *
 * @param config Hyperparameters.
 * @param weights Tensor store.
 * @throws {ShapeError} At the first tensor whose shape differs, naming it.
 */
export function checkShapes(config: ModelConfig, weights: WeightStore): void {
  for (const [name, shape] of expectedTensors(config)) {
    const actual = weights.shape(name);
    if (actual.length !== shape.length || actual.some((v, i) => v !== shape[i])) {
      throw new ShapeError(
        `${weights.source}: ${name}: shape [${actual}] does not match the config's [${shape}]`,
      );
    }
  }
}

/**
 * Uploads every weight, reading one tensor at a time; matrices larger than one storage
 * binding (or than `maxChunkBytes`) are split into row chunks.
 *
 * @param gpu Context that will own the buffers.
 * @param config Hyperparameters; shapes must already be checked.
 * @param weights Tensor store.
 * @param options Chunk cap in bytes and whether to report progress on stderr.
 */
export async function uploadWeights(
  gpu: GpuContext,
  config: ModelConfig,
  weights: WeightStore,
  options: { maxChunkBytes?: number; progress?: boolean },
): Promise<ModelWeights> {
  const expected = expectedTensors(config);
  const progress = new Progress("upload weights", expected.size, {
    quiet: !options.progress,
    unit: "tensors",
  });
  const read = async (name: string) => {
    const data = await weights.read(name);
    progress.advance(1, name);
    return data;
  };
  const vector = async (name: string) => gpu.upload(await read(name), name);
  const dense = async (name: string) => {
    const [rows, cols] = expected.get(name)!;
    return uploadMatrix(gpu, await read(name), rows, cols, name, options.maxChunkBytes);
  };
  // quantized layers go up as their packed codes and are never read dense
  const packed = weights.packed;
  const codebooks = packed ? new CodebookCache(gpu) : null;
  const matrix = async (name: string): Promise<LinearWeight> => {
    const prefix = name.replace(/\.weight$/, "");
    const layer = packed?.layers[prefix];
    if (!packed || !layer) return await dense(name);
    const uploaded = await QuantizedLinear.upload(gpu, prefix, layer, packed.tensors, {
      codebooks: codebooks!,
    });
    progress.advance(1, name);
    return uploaded;
  };

  const embed = await dense(tensorNames.embed);
  const blocks: BlockWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const bias = (projection: "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj") =>
      config.qkvBias ? vector(tensorNames.bias(l, projection)) : Promise.resolve(null);
    blocks.push({
      attnNorm: await vector(tensorNames.attnNorm(l)),
      wq: await matrix(tensorNames.linear(l, "self_attn.q_proj")),
      wk: await matrix(tensorNames.linear(l, "self_attn.k_proj")),
      wv: await matrix(tensorNames.linear(l, "self_attn.v_proj")),
      wo: await matrix(tensorNames.linear(l, "self_attn.o_proj")),
      bq: await bias("self_attn.q_proj"),
      bk: await bias("self_attn.k_proj"),
      bv: await bias("self_attn.v_proj"),
      ffnNorm: await vector(tensorNames.ffnNorm(l)),
      wGate: await matrix(tensorNames.linear(l, "mlp.gate_proj")),
      wUp: await matrix(tensorNames.linear(l, "mlp.up_proj")),
      wDown: await matrix(tensorNames.linear(l, "mlp.down_proj")),
    });
  }
  const finalNorm = await vector(tensorNames.finalNorm);
  const head = config.tiedEmbeddings ? embed : await matrix(tensorNames.lmHead);
  progress.finish();
  return { embed, head, finalNorm, blocks, codebooks };
}

/**
 * Bytes of every weight on the GPU: dense f32 matrices and vectors, and the stored bytes of
 * quantized layers and their shared codebooks.
 *
 * @param weights Uploaded weights.
 */
export function weightBytes(weights: ModelWeights): number {
  const size = (w: LinearWeight | GPUBuffer | null): number => {
    if (!w) return 0;
    if (w instanceof QuantizedLinear) return w.weightBytes;
    if ("chunks" in w) return w.chunks.reduce((sum, c) => sum + c.buffer.size, 0);
    return w.size;
  };
  let total = size(weights.embed) + size(weights.finalNorm) + (weights.codebooks?.bytes ?? 0);
  if (weights.head !== weights.embed) total += size(weights.head);
  for (const b of weights.blocks) {
    const parts = [
      b.attnNorm,
      b.ffnNorm,
      b.bq,
      b.bk,
      b.bv,
      b.wq,
      b.wk,
      b.wv,
      b.wo,
      b.wGate,
      b.wUp,
      b.wDown,
    ];
    for (const w of parts) total += size(w);
  }
  return total;
}

/**
 * Frees every weight buffer.
 *
 * @param gpu Context that owns them.
 * @param weights Weights to free.
 */
export function releaseWeights(gpu: GpuContext, weights: ModelWeights): void {
  const releaseLinear = (w: LinearWeight) =>
    w instanceof QuantizedLinear ? w.release() : releaseMatrix(gpu, w);
  releaseMatrix(gpu, weights.embed);
  if (weights.head !== weights.embed) releaseLinear(weights.head);
  gpu.release(weights.finalNorm);
  weights.codebooks?.release();
  for (const b of weights.blocks) {
    for (const m of [b.wq, b.wk, b.wv, b.wo, b.wGate, b.wUp, b.wDown]) releaseLinear(m);
    for (const v of [b.attnNorm, b.ffnNorm, b.bq, b.bk, b.bv]) if (v) gpu.release(v);
  }
}

/**
 * Frees the activations, scratch, rotary table and KV cache.
 *
 * @param gpu Context that owns them.
 * @param run Buffers to free.
 */
export function releaseRunBuffers(gpu: GpuContext, run: RunBuffers): void {
  const single = [
    run.ids,
    run.x,
    run.xb,
    run.q,
    run.att,
    run.gate,
    run.up,
    run.logits,
    run.scratch,
    run.ropeTable,
  ];
  for (const buffer of [...single, ...run.keyCache, ...run.valueCache]) gpu.release(buffer);
}

/**
 * Sizes the pass so that every activation fits one storage binding, then allocates the
 * activations, the attention scratch, the rotary table and the KV cache.
 *
 * @param gpu Context that will own the buffers.
 * @param c Hyperparameters.
 * @param contextLength Positions the KV cache holds.
 * @param maxBatchTokens Requested rows per pass.
 * @throws {UsageError} When the pass size is invalid or the cache cannot be bound.
 */
export function allocateRunBuffers(
  gpu: GpuContext,
  c: ModelConfig,
  contextLength: number,
  maxBatchTokens: number,
): RunBuffers {
  if (!Number.isSafeInteger(maxBatchTokens) || maxBatchTokens < 1) {
    throw new UsageError(`maxBatchTokens must be a positive integer, got ${maxBatchTokens}`);
  }
  const limit = gpu.limits.maxStorageBufferBindingSize;

  const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
  const widest = Math.max(c.dim, qDim, c.hiddenDim, c.vocabSize);
  const tokens = Math.min(maxBatchTokens, contextLength, Math.floor(limit / (4 * widest)));
  if (tokens < 1) {
    throw new GpuError(
      `One row of ${widest} f32 does not fit the device's ${limit}-byte storage binding limit`,
    );
  }

  const perLayerCache = contextLength * kvDim * 4;
  const tableBytes = contextLength * c.headDim * 4;
  if (perLayerCache > limit || tableBytes > limit) {
    const fits = Math.floor(limit / (4 * Math.max(kvDim, c.headDim)));
    throw new UsageError(
      `A KV cache of ${contextLength} positions does not fit the device's ${limit}-byte storage binding limit: use a context length of at most ${fits}`,
    );
  }

  const scratch = Math.min(
    attentionScratchBytes(tokens, contextLength, c.nHeads, c.headDim),
    limit,
  );
  const f32 = (count: number, label: string) => gpu.createBuffer(count * 4, label);
  return {
    tokens,
    ids: f32(contextLength, "ids"),
    x: f32(tokens * c.dim, "x"),
    xb: f32(tokens * c.dim, "xb"),
    q: f32(tokens * qDim, "q"),
    att: f32(tokens * qDim, "att"),
    gate: f32(tokens * c.hiddenDim, "gate"),
    up: f32(tokens * c.hiddenDim, "up"),
    logits: f32(tokens * c.vocabSize, "logits"),
    scratch: gpu.createBuffer(scratch, "attention scratch"),
    ropeTable: gpu.upload(ropeTable(contextLength, c.headDim, c.ropeTheta), "rope table"),
    keyCache: Array.from(
      { length: c.nLayers },
      (_, l) => f32(contextLength * kvDim, `key cache ${l}`),
    ),
    valueCache: Array.from(
      { length: c.nLayers },
      (_, l) => f32(contextLength * kvDim, `value cache ${l}`),
    ),
  };
}
