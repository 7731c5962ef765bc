/**
 * Reader of the quantized-model file: validates the metadata against the stored tensors
 * before reading any tensor data, then dequantizes layers lazily behind the ordinary
 * {@linkcode WeightStore} interface.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import { validateConfig } from "../model/config.ts";
import type { PackedLayers, WeightStore } from "../model/model.ts";
import { decodeToF32 } from "./dtype.ts";
import { SafetensorsFile } from "./safetensors.ts";
import { dequantizeUniform, dequantizeVq } from "./quantized_dequantize.ts";
import {
  channelOrderWords,
  indexWidth,
  unpackChannelOrder,
  unpackIndices,
} from "./quantized_pack.ts";
import {
  type LayerDesc,
  QUANTIZED_FORMAT,
  QUANTIZED_VERSION,
  type QuantizedModelFile,
  type TokenizerText,
  type UniformLayerDesc,
  type VqLayerDesc,
} from "./quantized_types.ts";

/**
 * Opens a quantized model file and validates its metadata against its tensors before any
 * tensor data is read.
 *
 * @param path File written by `writeQuantizedModel` (quantized_writer.ts).
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
    if (meta.version === "1") {
      throw new FormatError(
        path,
        "__metadata__.version",
        `Version 1 stores channel orders as u32 per row, which this reader no longer reads (version ${QUANTIZED_VERSION} packs them): re-run deno task quantize to rewrite the file`,
      );
    }
    if (meta.version !== String(QUANTIZED_VERSION)) {
      throw new FormatError(
        path,
        "__metadata__.version",
        `Unsupported version ${meta.version}: this reader understands version ${QUANTIZED_VERSION}; re-run deno task quantize with this toolkit`,
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
    const text: TokenizerText = {};
    for (const key of ["tokenizer.json", "tokenizer_config.json", "chat_template"] as const) {
      if (meta[key] !== undefined) text[key] = meta[key];
    }
    return {
      config,
      layers,
      quantization,
      weights: new QuantizedWeightStore(file, layers),
      file,
      text,
    };
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
  if (layer.channelOrder) {
    expectTensor(file, `${prefix}.channel_order`, "U32", [channelOrderWords(layer.rows)]);
  }

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
  readonly packed: PackedLayers;
  #file: SafetensorsFile;
  #layers: Map<string, LayerDesc>;
  #plain: Set<string>;

  constructor(file: SafetensorsFile, layers: Record<string, LayerDesc>) {
    this.source = file.path;
    this.packed = { layers, tensors: file };
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
    const order = layer.channelOrder
      ? unpackChannelOrder(await this.#u32(`${prefix}.channel_order`), layer.rows)
      : null;
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
