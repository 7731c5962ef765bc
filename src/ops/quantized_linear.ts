/**
 * A quantized linear layer held on the GPU as its packed codes, y[T, rows] = x[T, cols] @ W^T,
 * dequantized inside the kernels: vector-quantized layers (bit-packed indices, F16
 * codebooks, residual stages, per-row scales, optional channel order) and uniformly
 * quantized layers (RTN, GPTQ: packed codes, F16 scales and zero points per group). The
 * GPU holds only the tensors of the quantized file, never a dense copy of W.
 * Reference: {@linkcode quantizedLinearRef}.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { FormatError, ShapeError } from "../errors.ts";
import type { LayerDesc } from "../formats/quantized.ts";
import { bindRange, checkSize } from "./_common.ts";
import {
  recordUniform,
  recordVq,
  type UniformBuffers,
  type VqBuffers,
} from "./_quantized_dispatch.ts";
import {
  type CodebookPlacement,
  LayerUploads,
  uploadUniform,
  uploadVq,
} from "./_quantized_upload.ts";
import { CodebookCache, type PackedTensorSource } from "./quantized_tensors.ts";
import type { GpuMatrix } from "./gpu_matrix.ts";
import { linear, type LinearArgs } from "./linear.ts";
export { type CodebookPlacement, MAX_VECTOR_LENGTH } from "./_quantized_upload.ts";
export { CodebookCache, memoryTensors, type PackedTensorSource } from "./quantized_tensors.ts";
export { dequantizeLayer, quantizedLinearRef } from "./quantized_linear_ref.ts";

/** Options of {@linkcode QuantizedLinear.upload}. */
export interface QuantizedLinearOptions {
  /** Codebooks shared across layers; default a private cache (then release() frees them too). */
  codebooks?: CodebookCache;
  /** Memory the kernels read codebooks from. Default "auto". */
  placement?: CodebookPlacement;
}

/** Operands of {@linkcode QuantizedLinear.record}. Offsets and strides count f32 elements. */
export interface QuantizedLinearArgs {
  /** Input rows [tokens, cols] (row stride cols). */
  x: GPUBuffer;
  /** Output rows [tokens, rows] with row stride ldy; must not be the buffer of x. */
  y: GPUBuffer;
  /** Number of tokens T. */
  tokens: number;
  /** Element offset of x[0, 0]. Default 0. */
  xOffset?: number;
  /** Element offset of y[0, 0]. Default 0. */
  yOffset?: number;
  /** Row stride of y; default the layer's rows. */
  ldy?: number;
  /** Add to y instead of overwriting it (residual connections). Default false. */
  accumulate?: boolean;
}

/**
 * A quantized linear layer on the GPU.
 *
 * @example Decode one token through a quantized projection
 * ```ts ignore
 * const file = await openQuantizedModel(path);
 * const codebooks = new CodebookCache(gpu);
 * const wq = await QuantizedLinear.upload(gpu, prefix, file.layers[prefix], file.file, { codebooks });
 * await wq.record(batch, { x: xb, y: q, tokens: 1 });
 * ```
 */
export class QuantizedLinear {
  /** Tensor prefix of the layer (its weight name without ".weight"). */
  readonly prefix: string;
  /** Layer metadata as stored in the file. */
  readonly layer: LayerDesc;
  #gpu: GpuContext;
  #vq: VqBuffers | null;
  #uniform: UniformBuffers | null;
  #uploads: LayerUploads;
  #privateCodebooks: CodebookCache | null;

  private constructor(gpu: GpuContext, prefix: string, layer: LayerDesc, parts: {
    vq: VqBuffers | null;
    uniform: UniformBuffers | null;
    uploads: LayerUploads;
    privateCodebooks: CodebookCache | null;
  }) {
    this.#gpu = gpu;
    this.prefix = prefix;
    this.layer = layer;
    this.#vq = parts.vq;
    this.#uniform = parts.uniform;
    this.#uploads = parts.uploads;
    this.#privateCodebooks = parts.privateCodebooks;
  }

  /** Output features (rows of W). */
  get rows(): number {
    return this.layer.rows;
  }

  /** Input features (columns of W). */
  get cols(): number {
    return this.layer.cols;
  }

  /**
   * Bytes of the tensors this layer uploaded: indices or codes, scales and zero points as
   * stored, the channel order unpacked to 4 bytes a row, and codebooks when its cache is
   * private. Codebooks of a
   * shared {@linkcode CodebookCache} are counted by the cache, once however many layers
   * use them. Each buffer adds at most 3 bytes of padding to these counts.
   */
  get weightBytes(): number {
    return this.#uploads.bytes + (this.#privateCodebooks?.bytes ?? 0);
  }

  /**
   * Validates a layer's tensors against its metadata and uploads them as stored.
   *
   * @param gpu Context that will own the buffers.
   * @param prefix Tensor prefix (for example "model.layers.0.self_attn.q_proj").
   * @param layer Layer metadata from the quantized file.
   * @param tensors Source of the packed tensors (the file's SafetensorsFile works).
   * @param options Codebook cache and placement.
   * @throws {FormatError} When a tensor's size disagrees with the metadata, an index is
   *   out of its codebook's range or the channel order is not a permutation.
   * @throws {GpuError} When a tensor is larger than one storage binding, or a codebook
   *   must go to workgroup memory and does not fit.
   */
  static async upload(
    gpu: GpuContext,
    prefix: string,
    layer: LayerDesc,
    tensors: PackedTensorSource,
    options: QuantizedLinearOptions = {},
  ): Promise<QuantizedLinear> {
    checkSize(`${prefix} rows`, layer.rows);
    checkSize(`${prefix} cols`, layer.cols);
    const uploads = new LayerUploads(gpu, tensors);
    const privateCodebooks = layer.kind === "vq" && !options.codebooks
      ? new CodebookCache(gpu)
      : null;
    try {
      const vq = layer.kind === "vq"
        ? await uploadVq(
          gpu,
          prefix,
          layer,
          uploads,
          tensors,
          options.codebooks ?? privateCodebooks!,
          options.placement ?? "auto",
        )
        : null;
      const uniform = layer.kind === "uniform"
        ? await uploadUniform(prefix, layer, uploads, tensors)
        : null;
      if (!vq && !uniform) {
        throw new FormatError(
          tensors.path,
          `${prefix}.kind`,
          `Expected "vq" or "uniform", got ${JSON.stringify((layer as { kind: unknown }).kind)}`,
        );
      }
      return new QuantizedLinear(gpu, prefix, layer, { vq, uniform, uploads, privateCodebooks });
    } catch (err) {
      uploads.release();
      privateCodebooks?.release();
      throw err;
    }
  }

  /**
   * Records y = x @ W^T (or y += x @ W^T): the matvec kernels for one token, the matmul
   * kernels for several.
   *
   * @param batch Batch to record into.
   * @param args Operands and sizes.
   * @throws {ShapeError} When a size is invalid or an operand runs past its buffer.
   */
  async record(batch: GpuBatch, args: QuantizedLinearArgs): Promise<void> {
    const { rows, cols } = this.layer;
    checkSize("quantized linear tokens", args.tokens);
    const ldy = args.ldy ?? rows;
    if (ldy < rows) {
      throw new ShapeError(
        `${this.prefix}: row stride ldy ${ldy} is shorter than the layer's ${rows} outputs`,
      );
    }
    if (args.x === args.y) {
      throw new ShapeError(`${this.prefix}: output y must not share a buffer with x`);
    }
    const T = args.tokens;
    const x = bindRange(this.#gpu, args.x, args.xOffset ?? 0, T * cols, `${this.prefix} x`);
    const y = bindRange(
      this.#gpu,
      args.y,
      args.yOffset ?? 0,
      (T - 1) * ldy + rows,
      `${this.prefix} y`,
    );
    const act = {
      x: x.binding,
      xOffset: x.offset,
      y: y.binding,
      yOffset: y.offset,
      ldy,
      tokens: T,
      accumulate: args.accumulate ?? false,
    };
    if (this.#vq) await recordVq(this.#gpu, batch, this.#vq, act);
    else await recordUniform(this.#gpu, batch, this.#uniform!, act);
  }

  /** Frees the layer's buffers (and its codebooks when it used a private cache). */
  release(): void {
    this.#uploads.release();
    this.#privateCodebooks?.release();
  }
}

/**
 * Total weight bytes on the GPU for a set of quantized layers and their shared codebooks.
 *
 * @param layers Uploaded layers.
 * @param codebooks The cache they share, if any.
 * @returns Stored bytes of every uploaded tensor, each counted once.
 */
export function quantizedWeightBytes(
  layers: Iterable<QuantizedLinear>,
  codebooks?: CodebookCache,
): number {
  let total = codebooks?.bytes ?? 0;
  for (const layer of layers) total += layer.weightBytes;
  return total;
}

/** Operands of {@linkcode linearAny}: those of {@linkcode linear} with a dense or quantized weight. */
export type LinearAnyArgs = Omit<LinearArgs, "w"> & { w: GpuMatrix | QuantizedLinear };

/**
 * Records y = x @ W^T (or +=) for a dense weight ({@linkcode linear}) or a quantized one,
 * so a model can hold either kind per layer behind one call.
 *
 * @param gpu Context that owns the buffers.
 * @param batch Batch to record into.
 * @param args The arguments of {@linkcode linear}, with `w` dense or quantized.
 */
export async function linearAny(
  gpu: GpuContext,
  batch: GpuBatch,
  args: LinearAnyArgs,
): Promise<void> {
  const { w, rows, ...rest } = args;
  if (w instanceof QuantizedLinear) {
    await w.record(batch, { ...rest, tokens: rows });
  } else {
    await linear(gpu, batch, { ...args, w });
  }
}
