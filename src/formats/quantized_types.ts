/**
 * Types and constants of the quantized-model file (docs/format.md): the layer descriptions
 * stored under the `layers` metadata key, and what the writer takes and the reader returns.
 *
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import type { WeightStore } from "../model/model.ts";
import type { SafetensorsFile, TensorToWrite } from "./safetensors.ts";

/** Value of the `format` metadata key. */
export const QUANTIZED_FORMAT = "rsavq-quantized";
/**
 * Current format version (metadata key `version`). Version 2 stores `P.channel_order`
 * bit-packed at ceil(log2 rows) bits per entry. Version 1 stored one u32 per row, and the
 * reader rejects it with a message to re-run `deno task quantize`.
 */
export const QUANTIZED_VERSION = 2;

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
  /** First position in channelOrder (inclusive). */
  start: number;
  /** End position in channelOrder (exclusive). */
  end: number;
  /** First stage, then residual stages; dequantized vectors are their sum. */
  stages: VqStage[];
}

/** Metadata of a vector-quantized layer. */
export interface VqLayerDesc {
  /** Discriminant: vector-quantized. */
  kind: "vq";
  /** Output channels (m). */
  rows: number;
  /** Input columns (n). */
  cols: number;
  /** Vector length v along the input dimension. */
  vectorLength: number;
  /**
   * Whether `P.channel_order` is stored (U32 words, ceil(log2 rows) bits per entry, packed
   * like indices); otherwise rows are in natural order.
   */
  channelOrder: boolean;
  /** Channel groups, in stored order. */
  groups: VqGroupDesc[];
}

/** Metadata of a uniformly quantized layer (RTN, GPTQ). */
export interface UniformLayerDesc {
  /** Discriminant: uniformly quantized. */
  kind: "uniform";
  /** Output channels (m). */
  rows: number;
  /** Input columns (n). */
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
  /** The source model's tokenizer files and chat template, carried so text tasks work. */
  text?: TokenizerText;
}

/** Tokenizer files and chat template as text, stored under metadata keys of the same names. */
export interface TokenizerText {
  /** tokenizer.json contents. */
  "tokenizer.json"?: string;
  /** tokenizer_config.json contents. */
  "tokenizer_config.json"?: string;
  /** Jinja chat template. */
  chat_template?: string;
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
  /** Tokenizer files and chat template carried from the source model (empty when it had none). */
  text: TokenizerText;
}
