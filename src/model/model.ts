/**
 * The loaded-model description: a model's config, lazy access to its tensors, and its
 * tokenizer and chat template when the checkpoint has them.
 *
 * @module
 */
import type { LayerDesc } from "../formats/quantized.ts";
import type { PackedTensorSource } from "../ops/quantized_tensors.ts";
import type { ModelConfig } from "./config.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { FormatError } from "../errors.ts";

/** Lazy, per-tensor access to a checkpoint's weights, converted to f32 on read. */
export interface WeightStore {
  /** Path of the checkpoint, for error messages. */
  readonly source: string;
  /** Canonical names of every stored tensor. */
  names(): string[];
  /** Shape of tensor `name`, outermost first. */
  shape(name: string): number[];
  /** Reads tensor `name` as f32, row-major. */
  read(name: string): Promise<Float32Array>;
  /** Releases open file handles. */
  close(): void;
  /**
   * The packed layers behind this store when it reads a quantized file: GPU code runs
   * them with the quantized kernels instead of reading them dense.
   */
  readonly packed?: PackedLayers;
}

/** Quantized layers by prefix and the source of their packed tensors. */
export interface PackedLayers {
  /** Layer descriptions by prefix ("model.layers.0.self_attn.q_proj"). */
  layers: Record<string, LayerDesc>;
  /** Source of the packed tensors the descriptions name. */
  tensors: PackedTensorSource;
}

/** Checkpoint formats the loaders recognise. */
export type CheckpointFormat = "llama2c" | "hf" | "gguf" | "quantized";

/** A loaded model description. */
export interface LoadedModel {
  /** Path it was loaded from. */
  path: string;
  /** File format. */
  format: CheckpointFormat;
  /** Hyperparameters. */
  config: ModelConfig;
  /** Lazy tensors under canonical names. */
  weights: WeightStore;
  /** Tokenizer, or null for token-id-only models. */
  tokenizer: Tokenizer | null;
  /** Jinja chat template, or null. */
  chatTemplate: string | null;
}

/**
 * A WeightStore over tensors already in memory (tests, synthetic models, conversions).
 *
 * @example
 * ```ts
 * import { MemoryWeightStore } from "./model.ts";
 * const store = new MemoryWeightStore("mem", new Map([["w", { shape: [2], data: new Float32Array([1, 2]) }]]));
 * if ((await store.read("w"))[1] !== 2) throw new Error();
 * ```
 */
export class MemoryWeightStore implements WeightStore {
  readonly source: string;
  #tensors: Map<string, { shape: number[]; data: Float32Array }>;

  /**
   * Wraps in-memory tensors.
   *
   * @param source Label used in error messages.
   * @param tensors Tensors by canonical name.
   */
  constructor(source: string, tensors: Map<string, { shape: number[]; data: Float32Array }>) {
    this.source = source;
    this.#tensors = tensors;
  }

  names(): string[] {
    return [...this.#tensors.keys()];
  }

  shape(name: string): number[] {
    return this.#get(name).shape;
  }

  read(name: string): Promise<Float32Array> {
    return Promise.resolve(this.#get(name).data);
  }

  close(): void {}

  #get(name: string) {
    const t = this.#tensors.get(name);
    if (!t) throw new FormatError(this.source, name, "Missing tensor");
    return t;
  }
}

/**
 * Reads every tensor of a store into memory (for models that fit; the reference forward
 * and small-model tests use it).
 *
 * @param weights Store to read.
 * @returns Tensors by canonical name.
 */
export async function readAllWeights(weights: WeightStore): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const name of weights.names()) out.set(name, await weights.read(name));
  return out;
}

/**
 * Throws when a tensor contains NaN or infinity, naming the first bad element.
 *
 * @param source File the tensor came from.
 * @param name Tensor name.
 * @param data Values to check.
 * @throws {FormatError} At the first non-finite value.
 */
export function checkFinite(source: string, name: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw new FormatError(
        source,
        name,
        `Element ${i} is ${data[i]}: the checkpoint is corrupt or was saved after a diverged step`,
      );
    }
  }
}
