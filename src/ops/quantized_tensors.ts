/**
 * Sources of the packed tensors of quantized layers (a quantized safetensors file or
 * tensors in memory) and the GPU cache that uploads each shared codebook once.
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import { FormatError, GpuError } from "../errors.ts";
import type { TensorToWrite } from "../formats/safetensors.ts";

/** Raw tensor bytes by name: a SafetensorsFile, or {@linkcode memoryTensors} for data in memory. */
export interface PackedTensorSource {
  /** File name for errors. */
  readonly path: string;
  /** Returns the stored little-endian bytes of tensor `name`. */
  readBytes(name: string): Promise<Uint8Array>;
}

/**
 * Wraps in-memory tensors (as the quantized-file writer takes them) as a tensor source.
 *
 * @example
 * ```ts
 * import { memoryTensors } from "./quantized_tensors.ts";
 * const source = memoryTensors({ a: { dtype: "U32", shape: [1], data: new Uint8Array(4) } });
 * if ((await source.readBytes("a")).length !== 4) throw new Error("wrong bytes");
 * ```
 * @param tensors Tensors by name.
 * @param path Name used in errors.
 */
export function memoryTensors(
  tensors: Record<string, TensorToWrite>,
  path = "memory",
): PackedTensorSource {
  return {
    path,
    readBytes(name: string): Promise<Uint8Array> {
      const tensor = tensors[name];
      if (!tensor) {
        return Promise.reject(
          new FormatError(path, name, "Missing tensor that the layer metadata references"),
        );
      }
      return Promise.resolve(tensor.data);
    },
  };
}

/**
 * Checks that tensor `name` has exactly `byteLength` bytes.
 *
 * @param source Source, for the file name.
 * @param name Tensor name.
 * @param bytes Stored bytes.
 * @param byteLength Size the layer metadata implies.
 * @throws {FormatError} On a size mismatch.
 */
export function checkBytes(
  source: PackedTensorSource,
  name: string,
  bytes: Uint8Array,
  byteLength: number,
): void {
  if (bytes.byteLength !== byteLength) {
    throw new FormatError(
      source.path,
      name,
      `Expected ${byteLength} bytes from the layer metadata, found ${bytes.byteLength}`,
    );
  }
}

/**
 * Uploads packed bytes as a storage buffer, checking that the kernels can bind it whole.
 *
 * @param gpu Context that will own the buffer.
 * @param bytes Stored bytes (padded to 4 on upload).
 * @param name Tensor name, for the label and errors.
 * @throws {GpuError} When the tensor is larger than maxStorageBufferBindingSize.
 */
export function uploadPacked(gpu: GpuContext, bytes: Uint8Array, name: string): GPUBuffer {
  const limit = gpu.limits.maxStorageBufferBindingSize;
  if (bytes.byteLength > limit) {
    // NOTE: packed tensors are bound whole; one past the binding limit would need a split by rows.
    throw new GpuError(
      `${name}: ${bytes.byteLength} bytes exceed the device's maxStorageBufferBindingSize ${limit}: quantize with smaller channel groups`,
    );
  }
  return gpu.upload(bytes, name);
}

/**
 * GPU copies of codebook tensors by name, uploaded once and shared by every layer that
 * references them, so a model-wide codebook costs its stored bytes once, as in the file.
 */
export class CodebookCache {
  #gpu: GpuContext;
  #entries = new Map<string, { byteLength: number; buffer: Promise<GPUBuffer> }>();
  #uploaded: GPUBuffer[] = [];
  #bytes = 0;

  /** @param gpu Context that will own the buffers. */
  constructor(gpu: GpuContext) {
    this.#gpu = gpu;
  }

  /**
   * Returns the GPU buffer of codebook `name`, uploading it on first use.
   *
   * @param name Tensor name of the F16 [K, v] codebook.
   * @param source Where to read it.
   * @param byteLength Expected stored size, K * v * 2.
   * @throws {FormatError} When the stored tensor has another size, or another layer
   *   sharing the codebook expects another size.
   */
  get(name: string, source: PackedTensorSource, byteLength: number): Promise<GPUBuffer> {
    const entry = this.#entries.get(name);
    if (entry) {
      if (entry.byteLength === byteLength) return entry.buffer;
      const detail =
        `Layers sharing this codebook disagree on its size: ${entry.byteLength} and ${byteLength} bytes (K * vectorLength * 2)`;
      return Promise.reject(new FormatError(source.path, name, detail));
    }
    const buffer = source.readBytes(name).then((bytes) => {
      checkBytes(source, name, bytes, byteLength);
      const uploaded = uploadPacked(this.#gpu, bytes, name);
      this.#uploaded.push(uploaded);
      this.#bytes += bytes.byteLength;
      return uploaded;
    });
    this.#entries.set(name, { byteLength, buffer });
    // a failed read is not cached, so a corrected source can be tried again
    buffer.catch(() => this.#entries.delete(name));
    return buffer;
  }

  /** Stored bytes of every codebook uploaded so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Frees every codebook uploaded so far; call it after the uploads that use the cache have settled. */
  release(): void {
    for (const buffer of this.#uploaded) this.#gpu.release(buffer);
    this.#uploaded = [];
    this.#entries.clear();
    this.#bytes = 0;
  }
}
