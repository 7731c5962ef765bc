/**
 * Validates one quantized layer's packed tensors against its metadata and uploads them
 * as stored (the channel order excepted, which is unpacked to u32 per row): the buffers the
 * quantized kernels read (src/ops/_quantized_dispatch.ts).
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import { FormatError, GpuError } from "../errors.ts";
import type { UniformLayerDesc, VqLayerDesc } from "../formats/quantized.ts";
import {
  channelOrderWords,
  indexWidth,
  unpackChannelOrder,
  unpackIndices,
} from "../formats/quantized.ts";
import {
  codebookWords,
  QUANTIZED_WG,
  type UniformBuffers,
  type VqBuffers,
  type VqGroupBuffers,
} from "./_quantized_dispatch.ts";
import {
  checkBytes,
  type CodebookCache,
  type PackedTensorSource,
  uploadPacked,
} from "./quantized_tensors.ts";
import { LOOP_BUDGET } from "./_common.ts";

/** Longest VQ vector the kernels unroll. */
export const MAX_VECTOR_LENGTH = 8;

/**
 * Memory the kernels read a VQ codebook from. "auto" picks workgroup memory when the
 * codebook fits the device's maxComputeWorkgroupStorageSize, and a storage buffer when not.
 */
export type CodebookPlacement = "auto" | "workgroup" | "storage";

/** The buffers one layer uploads (codebooks excepted) and their stored bytes. */
export class LayerUploads {
  /** Uploaded buffers, freed together. */
  readonly buffers: GPUBuffer[] = [];
  /**
   * Bytes uploaded: the stored tensors as they are, except the channel order, which is
   * unpacked to u32 per row for the kernels (4 bytes per row instead of ceil(log2 rows) bits).
   */
  bytes = 0;
  #gpu: GpuContext;
  #source: PackedTensorSource;

  /**
   * @param gpu Context that owns the buffers.
   * @param source Where tensors are read.
   */
  constructor(gpu: GpuContext, source: PackedTensorSource) {
    this.#gpu = gpu;
    this.#source = source;
  }

  /**
   * Reads tensor `name`, checks its size and uploads it.
   *
   * @param name Tensor name.
   * @param byteLength Size the metadata implies.
   */
  async take(name: string, byteLength: number): Promise<{ bytes: Uint8Array; buffer: GPUBuffer }> {
    const bytes = await this.read(name, byteLength);
    return { bytes, buffer: this.upload(bytes, name) };
  }

  /**
   * Reads tensor `name` and checks its size, without uploading it.
   *
   * @param name Tensor name.
   * @param byteLength Size the metadata implies.
   */
  async read(name: string, byteLength: number): Promise<Uint8Array> {
    const bytes = await this.#source.readBytes(name);
    checkBytes(this.#source, name, bytes, byteLength);
    return bytes;
  }

  /**
   * Uploads bytes (stored or derived from stored tensors) and counts them.
   *
   * @param bytes Data, a multiple of 4 bytes.
   * @param name Label for errors.
   */
  upload(bytes: Uint8Array, name: string): GPUBuffer {
    const buffer = uploadPacked(this.#gpu, bytes, name);
    this.buffers.push(buffer);
    this.bytes += bytes.byteLength;
    return buffer;
  }

  /** Frees every buffer taken. */
  release(): void {
    for (const buffer of this.buffers) this.#gpu.release(buffer);
    this.buffers.length = 0;
  }
}

/**
 * Uploads a uniformly quantized layer: codes, scales and zero points.
 *
 * @param prefix Tensor prefix.
 * @param layer Layer metadata.
 * @param uploads Collector of the layer's buffers.
 * @param source Where tensors are read, for errors.
 */
export async function uploadUniform(
  prefix: string,
  layer: UniformLayerDesc,
  uploads: LayerUploads,
  source: PackedTensorSource,
): Promise<UniformBuffers> {
  const { rows, cols, bits, groupSize } = layer;
  if (!(Number.isInteger(bits) && bits >= 1 && bits <= 8)) {
    throw new FormatError(
      source.path,
      `${prefix}.bits`,
      `Expected an integer in [1, 8], got ${bits}`,
    );
  }
  if (!(Number.isSafeInteger(groupSize) && groupSize >= 1)) {
    throw new FormatError(
      source.path,
      `${prefix}.groupSize`,
      `Expected a positive integer, got ${groupSize}`,
    );
  }
  const groups = Math.ceil(cols / groupSize), wordsPerRow = Math.ceil((cols * bits) / 32);
  const qweight = (await uploads.take(`${prefix}.qweight`, rows * wordsPerRow * 4)).buffer;
  const scales = (await uploads.take(`${prefix}.scales`, rows * groups * 2)).buffer;
  const zeros = (await uploads.take(`${prefix}.zeros`, rows * groups * 2)).buffer;
  return { rows, cols, bits, groupSize, qweight, scales, zeros };
}

/**
 * Uploads a vector-quantized layer: scales, channel order and every stage's indices, with
 * codebooks through the shared cache.
 *
 * @param gpu Context whose limits decide codebook placement.
 * @param prefix Tensor prefix.
 * @param layer Layer metadata.
 * @param uploads Collector of the layer's buffers.
 * @param source Where tensors are read.
 * @param codebooks Shared codebook cache.
 * @param placement Where the kernels read codebooks from.
 */
export async function uploadVq(
  gpu: GpuContext,
  prefix: string,
  layer: VqLayerDesc,
  uploads: LayerUploads,
  source: PackedTensorSource,
  codebooks: CodebookCache,
  placement: CodebookPlacement,
): Promise<VqBuffers> {
  const { rows, cols, vectorLength: v } = layer;
  if (!(Number.isInteger(v) && v >= 1 && v <= MAX_VECTOR_LENGTH)) {
    throw new FormatError(
      source.path,
      `${prefix}.vectorLength`,
      `The GPU kernels support vector lengths 1 to ${MAX_VECTOR_LENGTH}, got ${v}: dequantize the layer instead`,
    );
  }
  const perRow = Math.ceil(cols / v);
  const scales = (await uploads.take(`${prefix}.scales`, rows * 2)).buffer;
  let order: GPUBuffer | null = null;
  if (layer.channelOrder) {
    // Stored bit-packed; the kernels read one u32 per row, so it is unpacked here.
    const name = `${prefix}.channel_order`;
    const packed = await uploads.read(name, channelOrderWords(rows) * 4);
    const unpacked = unpackChannelOrder(new Uint32Array(packed.slice().buffer), rows);
    checkPermutation(source.path, name, unpacked, rows);
    order = uploads.upload(new Uint8Array(unpacked.buffer), name);
  }

  const groups: VqGroupBuffers[] = [];
  let next = 0;
  for (const [g, group] of (layer.groups ?? []).entries()) {
    if (
      group.start !== next || !(group.end > group.start) || group.end > rows ||
      !group.stages?.length
    ) {
      throw new FormatError(
        source.path,
        `${prefix}.groups[${g}]`,
        `Groups must partition rows 0..${rows} in order with at least one stage each; got start ${group.start}, end ${group.end}`,
      );
    }
    next = group.end;
    const count = group.end - group.start;
    const stages = [];
    for (const stage of group.stages) {
      if (!(Number.isSafeInteger(stage.size) && stage.size >= 1 && stage.size <= 2 ** 32)) {
        throw new FormatError(
          source.path,
          `${prefix}.groups[${g}].size`,
          `Expected a codebook size in [1, 2^32], got ${stage.size}`,
        );
      }
      const bits = indexWidth(stage.size);
      if (count * perRow * bits >= 2 ** 32) {
        // NOTE: the kernels address index bits with u32; a larger group would need 64-bit offsets.
        throw new GpuError(
          `${prefix}: group ${g} has ${
            count * perRow
          } indices of ${bits} bits, more than the 2^32 bit positions the kernels can address: use smaller channel groups`,
        );
      }
      const indices = await uploads.take(
        stage.indices,
        Math.ceil((count * perRow * bits) / 32) * 4,
      );
      // a power-of-two codebook cannot be indexed past its end; others are checked once here
      if (2 ** bits !== stage.size) {
        checkIndexRange(
          source.path,
          stage.indices,
          indices.bytes,
          count * perRow,
          bits,
          stage.size,
        );
      }
      const codebook = await codebooks.get(stage.codebook, source, stage.size * v * 2);
      const shared = placeCodebook(gpu, placement, stage.codebook, stage.size, v);
      stages.push({ indices: indices.buffer, codebook, size: stage.size, bits, shared });
    }
    groups.push({ start: group.start, end: group.end, stages });
  }
  if (next !== rows) {
    throw new FormatError(
      source.path,
      `${prefix}.groups`,
      `Groups cover rows 0..${next} of ${rows}`,
    );
  }
  return { rows, cols, vectorLength: v, scales, order, groups };
}

// Whether a [size, v] f16 codebook goes to workgroup memory under `placement`.
function placeCodebook(
  gpu: GpuContext,
  placement: CodebookPlacement,
  name: string,
  size: number,
  v: number,
): boolean {
  if (placement === "storage") return false;
  const bytes = codebookWords(size, v) * 4;
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  // the copy loop must also leave most of the loop budget to the product itself
  const fits = bytes <= limit && codebookWords(size, v) / QUANTIZED_WG <= LOOP_BUDGET / 2;
  if (placement === "workgroup" && !fits) {
    throw new GpuError(
      `Codebook ${name} of ${bytes} bytes does not fit the device's maxComputeWorkgroupStorageSize ${limit}: use placement "auto" or "storage"`,
    );
  }
  return fits;
}

function checkPermutation(path: string, field: string, order: Uint32Array, rows: number): void {
  const seen = new Uint8Array(rows);
  for (let p = 0; p < rows; p++) {
    const row = order[p];
    if (row >= rows || seen[row]) {
      throw new FormatError(
        path,
        field,
        `Entry ${p} is ${row}: expected a permutation of 0..${rows - 1}`,
      );
    }
    seen[row] = 1;
  }
}

function checkIndexRange(
  path: string,
  name: string,
  bytes: Uint8Array,
  count: number,
  bits: number,
  size: number,
): void {
  const indices = unpackIndices(new Uint32Array(bytes.slice().buffer), count, bits);
  for (let i = 0; i < count; i++) {
    if (indices[i] >= size) {
      throw new FormatError(
        path,
        name,
        `Index ${indices[i]} at ${i} is out of range for a codebook of ${size} entries`,
      );
    }
  }
}
