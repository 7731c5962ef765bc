/**
 * The quantized-model file: one safetensors file whose metadata describes every quantized
 * linear layer, with the unquantized tensors (embeddings, norms, head) stored as they were.
 * docs/format.md specifies it in full. This module writes it, validates it and
 * dequantizes its layers lazily behind the ordinary {@linkcode WeightStore} interface.
 *
 * A vector-quantized layer with prefix P (for example "model.layers.0.self_attn.q_proj")
 * stores `P.scales` F16 [rows] and, when rows are reordered, `P.channel_order` U32 [rows].
 * Each channel group g and stage s stores packed indices `P.indices.g{g}.s{s}` U32 [words].
 * Groups name their F16 [K, v] codebooks by tensor name, so one codebook can serve several
 * groups and layers. A uniformly quantized layer stores `P.qweight` U32
 * [rows, words per row], and `P.scales` and `P.zeros` F16 [rows, groups].
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import { validateConfig } from "../model/config.ts";
import type { WeightStore } from "../model/model.ts";
import { decodeToF32, encodeFromF32 } from "./dtype.ts";
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from "./safetensors.ts";

/** Value of the `format` metadata key. */
export const QUANTIZED_FORMAT = "rsavq-quantized";
/** Current format version (metadata key `version`). */
export const QUANTIZED_VERSION = 1;

/** One stage of a channel group: a codebook and the packed indices into it. */
export interface VqStage {
  /** Tensor name of the F16 codebook [size, vectorLength]. */
  codebook: string;
  /** Codebook entries K; indices are ceil(log2 K) bits wide (at least 1). */
  size: number;
  /** Tensor name of the packed U32 indices. */
  indices: string;
}

/** Rows channelOrder[start..end) of a layer, quantized with their own codebooks. */
export interface VqGroupDesc {
  start: number;
  end: number;
  /** First stage, then residual stages; dequantized vectors are their sum. */
  stages: VqStage[];
}

/** Metadata of a vector-quantized layer. */
export interface VqLayerDesc {
  kind: "vq";
  rows: number;
  cols: number;
  vectorLength: number;
  /** Whether `P.channel_order` is stored; otherwise rows are in natural order. */
  channelOrder: boolean;
  groups: VqGroupDesc[];
}

/** Metadata of a uniformly quantized layer (RTN, GPTQ). */
export interface UniformLayerDesc {
  kind: "uniform";
  rows: number;
  cols: number;
  /** Code width in bits (1-8). */
  bits: number;
  /** Input columns per scale and zero point; the last group of a row may be partial. */
  groupSize: number;
}

/** Metadata of one quantized layer. */
export type LayerDesc = VqLayerDesc | UniformLayerDesc;

/** Everything a quantized file holds, in memory, as the writer takes it. */
export interface QuantizedModelData {
  /** The original model's hyperparameters. */
  config: ModelConfig;
  /** Quantized layers by prefix (the tensor name without ".weight"). */
  layers: Record<string, LayerDesc>;
  /** Every stored tensor: unquantized weights, scales, indices, codebooks. */
  tensors: Record<string, TensorToWrite>;
  /** Method, settings and results, stored as JSON under `quantization`. */
  quantization: Record<string, unknown>;
}

/**
 * Packs indices of `bits` bits each into little-endian u32 words, least significant bit
 * first: index i occupies stream bits [i * bits, (i + 1) * bits), stream bit t being bit
 * t mod 32 of word floor(t / 32).
 *
 * @example
 * ```ts
 * import { packIndices, unpackIndices } from "./quantized.ts";
 * const words = packIndices([1, 2, 3], 2);
 * if (words[0] !== 0b111001 || unpackIndices(words, 3, 2)[2] !== 3) throw new Error();
 * ```
 * @param indices Values below 2^bits.
 * @param bits Width, 1 to 32.
 * @returns ceil(n * bits / 32) words.
 */
export function packIndices(indices: ArrayLike<number>, bits: number): Uint32Array {
  const words = new Uint32Array(Math.ceil((indices.length * bits) / 32));
  for (let i = 0; i < indices.length; i++) {
    const value = indices[i];
    if (value < 0 || value >= 2 ** bits) {
      throw new RangeError(`Index ${value} at ${i} does not fit in ${bits} bits`);
    }
    const bit = i * bits, w = bit >>> 5, shift = bit & 31;
    words[w] |= value << shift;
    if (shift + bits > 32) words[w + 1] |= value >>> (32 - shift);
  }
  return words;
}

/**
 * Unpacks `count` indices of `bits` bits from words written by {@linkcode packIndices}.
 *
 * @param words Packed words.
 * @param count Number of indices.
 * @param bits Width, 1 to 32.
 */
export function unpackIndices(words: Uint32Array, count: number, bits: number): Uint32Array {
  const out = new Uint32Array(count);
  const mask = bits === 32 ? 0xffffffff : (1 << bits) - 1;
  for (let i = 0; i < count; i++) {
    const bit = i * bits, w = bit >>> 5, shift = bit & 31;
    let value = words[w] >>> shift;
    if (shift + bits > 32) value |= words[w + 1] << (32 - shift);
    out[i] = (value & mask) >>> 0;
  }
  return out;
}

/** Bits of one index into a codebook of `size` entries (at least 1), as src/quantize/bpw.ts counts them. */
function indexWidth(size: number): number {
  return Math.max(1, Math.ceil(Math.log2(size)));
}

/**
 * Writes a quantized model atomically.
 *
 * @param path Output `.safetensors` path.
 * @param data Config, layer metadata, tensors and settings.
 */
export async function writeQuantizedModel(path: string, data: QuantizedModelData): Promise<void> {
  await writeSafetensors(path, data.tensors, {
    format: QUANTIZED_FORMAT,
    version: String(QUANTIZED_VERSION),
    config: JSON.stringify(data.config),
    layers: JSON.stringify(data.layers),
    quantization: JSON.stringify(data.quantization),
  });
}

/** An open quantized model: validated metadata and lazy dequantization. */
export interface QuantizedModelFile {
  /** Original hyperparameters. */
  config: ModelConfig;
  /** Quantized layers by prefix. */
  layers: Record<string, LayerDesc>;
  /** Stored settings and results. */
  quantization: Record<string, unknown>;
  /** Dense weights under canonical names (quantized layers dequantized on read). */
  weights: WeightStore;
  /** The underlying file, for raw access to packed tensors. */
  file: SafetensorsFile;
}

/**
 * Opens a quantized model file and validates its metadata against its tensors before any
 * tensor data is read.
 *
 * @param path File written by {@linkcode writeQuantizedModel}.
 * @throws {FormatError} On a missing key, a bad layer description or a tensor whose
 *   dtype or shape disagrees with it.
 */
export async function openQuantizedModel(path: string): Promise<QuantizedModelFile> {
  const file = await SafetensorsFile.open(path);
  try {
    const meta = file.metadata;
    if (meta.format !== QUANTIZED_FORMAT) {
      throw new FormatError(
        path,
        "__metadata__.format",
        `Expected "${QUANTIZED_FORMAT}", got ${
          JSON.stringify(meta.format)
        }: not a quantized model written by deno task quantize`,
      );
    }
    if (meta.version !== String(QUANTIZED_VERSION)) {
      throw new FormatError(
        path,
        "__metadata__.version",
        `Unsupported version ${meta.version}: this reader understands version ${QUANTIZED_VERSION}`,
      );
    }
    const config = parseJson(path, "config", meta.config) as ModelConfig;
    validateConfig(config, path);
    const layers = parseJson(path, "layers", meta.layers) as Record<string, LayerDesc>;
    const quantization = parseJson(path, "quantization", meta.quantization ?? "{}") as Record<
      string,
      unknown
    >;
    for (const [prefix, layer] of Object.entries(layers)) validateLayer(file, prefix, layer);
    return { config, layers, quantization, weights: new QuantizedWeightStore(file, layers), file };
  } catch (err) {
    file.close();
    throw err;
  }
}

function parseJson(path: string, key: string, text: string | undefined): unknown {
  if (text === undefined) {
    throw new FormatError(
      path,
      `__metadata__.${key}`,
      "Missing key: the file was not written by deno task quantize",
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FormatError(path, `__metadata__.${key}`, `Invalid JSON: ${(err as Error).message}`);
  }
}

function expectTensor(file: SafetensorsFile, name: string, dtype: string, shape: number[]): void {
  const info = file.tensors.get(name);
  if (!info) {
    throw new FormatError(file.path, name, "Missing tensor that the layer metadata references");
  }
  if (info.dtype !== dtype || info.shape.join(",") !== shape.join(",")) {
    throw new FormatError(
      file.path,
      name,
      `Expected ${dtype} [${shape}], found ${info.dtype} [${info.shape}]`,
    );
  }
}

function validateLayer(file: SafetensorsFile, prefix: string, layer: LayerDesc): void {
  const field = (what: string) => `__metadata__.layers.${prefix}${what}`;
  const positive = (x: unknown) => Number.isSafeInteger(x) && (x as number) > 0;
  if (!layer || !positive(layer.rows) || !positive(layer.cols)) {
    throw new FormatError(file.path, field(""), "Expected positive integer rows and cols");
  }
  if (layer.kind === "uniform") {
    if (
      !(Number.isInteger(layer.bits) && layer.bits >= 1 && layer.bits <= 8) ||
      !positive(layer.groupSize)
    ) {
      throw new FormatError(
        file.path,
        field(""),
        `Expected bits in [1, 8] and a positive groupSize, got ${layer.bits} and ${layer.groupSize}`,
      );
    }
    const groups = Math.ceil(layer.cols / layer.groupSize);
    expectTensor(file, `${prefix}.qweight`, "U32", [
      layer.rows,
      Math.ceil((layer.cols * layer.bits) / 32),
    ]);
    expectTensor(file, `${prefix}.scales`, "F16", [layer.rows, groups]);
    expectTensor(file, `${prefix}.zeros`, "F16", [layer.rows, groups]);
    return;
  }

  if (layer.kind !== "vq") {
    throw new FormatError(
      file.path,
      field(".kind"),
      `Expected "vq" or "uniform", got ${JSON.stringify((layer as { kind: unknown }).kind)}`,
    );
  }
  const v = layer.vectorLength;
  if (!positive(v)) {
    throw new FormatError(
      file.path,
      field(".vectorLength"),
      `Expected a positive integer, got ${v}`,
    );
  }

  expectTensor(file, `${prefix}.scales`, "F16", [layer.rows]);
  if (layer.channelOrder) expectTensor(file, `${prefix}.channel_order`, "U32", [layer.rows]);

  // Groups must partition the stored positions in order, and each stage's tensors must match.
  const vectorsPerRow = Math.ceil(layer.cols / v);
  let next = 0;
  for (const [g, group] of (layer.groups ?? []).entries()) {
    if (
      group.start !== next || !(group.end > group.start) || group.end > layer.rows ||
      !group.stages?.length
    ) {
      throw new FormatError(
        file.path,
        field(`.groups[${g}]`),
        `Groups must partition rows 0..${layer.rows} in order with at least one stage each; got start ${group.start}, end ${group.end}`,
      );
    }
    next = group.end;
    for (const stage of group.stages) {
      if (!(Number.isInteger(stage.size) && stage.size >= 1 && stage.size <= 2 ** 32)) {
        throw new FormatError(
          file.path,
          field(`.groups[${g}].size`),
          `Invalid codebook size ${stage.size}`,
        );
      }
      expectTensor(file, stage.codebook, "F16", [stage.size, v]);
      expectTensor(file, stage.indices, "U32", [
        Math.ceil(((group.end - group.start) * vectorsPerRow * indexWidth(stage.size)) / 32),
      ]);
    }
  }
  if (next !== layer.rows) {
    throw new FormatError(
      file.path,
      field(".groups"),
      `Groups cover rows 0..${next} of ${layer.rows}`,
    );
  }
}

/** Dense view of a quantized file: quantized layers are dequantized when read. */
class QuantizedWeightStore implements WeightStore {
  readonly source: string;
  #file: SafetensorsFile;
  #layers: Map<string, LayerDesc>;
  #plain: Set<string>;

  constructor(file: SafetensorsFile, layers: Record<string, LayerDesc>) {
    this.source = file.path;
    this.#file = file;
    this.#layers = new Map(Object.entries(layers).map(([p, l]) => [`${p}.weight`, l]));
    const stored = new Set<string>();
    for (const [p, l] of Object.entries(layers)) {
      for (const suffix of [".scales", ".channel_order", ".qweight", ".zeros"]) {
        stored.add(p + suffix);
      }
      if (l.kind === "vq") {
        for (const g of l.groups) for (const s of g.stages) stored.add(s.indices).add(s.codebook);
      }
    }
    this.#plain = new Set([...file.tensors.keys()].filter((n) => !stored.has(n)));
  }

  names(): string[] {
    return [...this.#plain, ...this.#layers.keys()];
  }

  shape(name: string): number[] {
    const layer = this.#layers.get(name);
    if (layer) return [layer.rows, layer.cols];
    if (!this.#plain.has(name)) throw new FormatError(this.source, name, "Missing tensor");
    return this.#file.info(name).shape;
  }

  async read(name: string): Promise<Float32Array> {
    const layer = this.#layers.get(name);
    if (!layer) {
      if (!this.#plain.has(name)) throw new FormatError(this.source, name, "Missing tensor");
      return await this.#file.readF32(name);
    }
    const prefix = name.slice(0, -".weight".length);
    return layer.kind === "vq"
      ? await this.#readVq(prefix, layer)
      : await this.#readUniform(prefix, layer);
  }

  close(): void {
    this.#file.close();
  }

  async #u32(name: string): Promise<Uint32Array> {
    const bytes = await this.#file.readBytes(name);
    return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }

  async #readVq(prefix: string, layer: VqLayerDesc): Promise<Float32Array> {
    const scales = await this.#file.readF32(`${prefix}.scales`);
    const order = layer.channelOrder ? await this.#u32(`${prefix}.channel_order`) : null;
    const stages = [];
    for (const group of layer.groups) {
      for (const stage of group.stages) {
        const codebook = await this.#file.readF32(stage.codebook);
        const count = (group.end - group.start) * Math.ceil(layer.cols / layer.vectorLength);
        const indices = unpackIndices(
          await this.#u32(stage.indices),
          count,
          indexWidth(stage.size),
        );
        stages.push({ group, codebook, indices });
      }
    }
    return dequantizeVq(layer, scales, order, stages, this.source, prefix);
  }

  async #readUniform(prefix: string, layer: UniformLayerDesc): Promise<Float32Array> {
    const codes = await this.#u32(`${prefix}.qweight`);
    const scales = decodeToF32(await this.#file.readBytes(`${prefix}.scales`), "F16");
    const zeros = decodeToF32(await this.#file.readBytes(`${prefix}.zeros`), "F16");
    return dequantizeUniform(layer, codes, scales, zeros);
  }
}

/**
 * Dense weights [rows, cols] of a vector-quantized layer:
 * W[r, q v + d] = scale[r] * sum over stages of codebook[index][d], in f32.
 *
 * @param layer Layer metadata.
 * @param scales Per-row scales [rows], in natural row order.
 * @param order Channel order [rows] (stored position -> row), or null for natural order.
 * @param stages Each stage's group, codebook [K, v] and unpacked indices.
 * @param source File name for errors.
 * @param prefix Layer prefix for errors.
 */
export function dequantizeVq(
  layer: VqLayerDesc,
  scales: Float32Array,
  order: Uint32Array | null,
  stages: { group: VqGroupDesc; codebook: Float32Array; indices: Uint32Array }[],
  source = "",
  prefix = "",
): Float32Array {
  const { rows, cols, vectorLength: v } = layer;
  const perRow = Math.ceil(cols / v);
  const sums = new Float32Array(rows * perRow * v);
  if (order) {
    const seen = new Uint8Array(rows);
    for (const row of order) {
      if (row >= rows || seen[row]) {
        throw new FormatError(
          source,
          `${prefix}.channel_order`,
          `Row ${row} is out of range [0, ${rows}) or repeated: expected a permutation`,
        );
      }
      seen[row] = 1;
    }
  }
  for (const { group, codebook, indices } of stages) {
    const k = codebook.length / v;
    for (let p = group.start; p < group.end; p++) {
      const row = order ? order[p] : p;
      for (let q = 0; q < perRow; q++) {
        const index = indices[(p - group.start) * perRow + q];
        if (index >= k) {
          throw new FormatError(
            source,
            prefix,
            `Index ${index} out of range for a codebook of ${k} entries`,
          );
        }
        const base = (row * perRow + q) * v;
        for (let d = 0; d < v; d++) sums[base + d] += codebook[index * v + d];
      }
    }
  }
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = scales[r] * sums[r * perRow * v + c];
  }
  return out;
}

/**
 * Dense weights [rows, cols] of a uniformly quantized layer:
 * W[r, c] = scale[r, g] * (code[r, c] - zero[r, g]) with g = floor(c / groupSize).
 *
 * @param layer Layer metadata.
 * @param codes Packed codes [rows, ceil(cols * bits / 32)] words.
 * @param scales Scales [rows, groups].
 * @param zeros Zero points [rows, groups].
 */
export function dequantizeUniform(
  layer: UniformLayerDesc,
  codes: Uint32Array,
  scales: Float32Array,
  zeros: Float32Array,
): Float32Array {
  const { rows, cols, bits, groupSize } = layer;
  const wordsPerRow = Math.ceil((cols * bits) / 32), groups = Math.ceil(cols / groupSize);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const q = unpackIndices(codes.subarray(r * wordsPerRow, (r + 1) * wordsPerRow), cols, bits);
    for (let c = 0; c < cols; c++) {
      const g = r * groups + Math.floor(c / groupSize);
      out[r * cols + c] = scales[g] * (q[c] - zeros[g]);
    }
  }
  return out;
}

/**
 * Wraps f32 values as an F16 tensor to write.
 *
 * @param values Values (rounded to nearest f16).
 * @param shape Shape.
 */
export function f16Tensor(values: Float32Array, shape: number[]): TensorToWrite {
  return { dtype: "F16", shape, data: encodeFromF32(values, "F16") };
}

/**
 * Wraps u32 words as a U32 tensor to write.
 *
 * @param words Words.
 * @param shape Shape.
 */
export function u32Tensor(words: Uint32Array, shape: number[]): TensorToWrite {
  return {
    dtype: "U32",
    shape,
    data: new Uint8Array(words.buffer, words.byteOffset, words.byteLength),
  };
}
