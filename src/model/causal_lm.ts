/**
 * The interface both forward implementations (the TypeScript reference and the WebGPU
 * path) provide, so generation, evaluation and calibration are written once.
 *
 * @module
 */
import type { ModelConfig } from "./config.ts";

/** Options of {@linkcode CausalLM.forward}. */
export interface ForwardOptions {
  /** Return only the last position's logits ([vocab]) instead of all ([T, vocab]). */
  lastOnly?: boolean;
}

/** A decoder with a KV cache that turns token ids into next-token logits. */
export interface CausalLM {
  /** Hyperparameters. */
  readonly config: ModelConfig;
  /** Number of positions already in the KV cache. */
  readonly position: number;
  /** Empties the KV cache; the next token goes to position 0. */
  reset(): void;
  /**
   * Appends `tokens` at positions `position .. position + T - 1` and returns their logits,
   * row-major [T, vocab] (or [vocab] with `lastOnly`).
   *
   * @param tokens Token ids, T of them, with position + T <= maxSeqLen.
   * @param options Output selection.
   */
  forward(tokens: ArrayLike<number>, options?: ForwardOptions): Promise<Float32Array>;
  /**
   * Drops cached positions at and after `position`, so the next token goes there. Lets
   * several continuations share one prefix. Optional: engines without it are re-fed.
   *
   * @param position New cache length, from 0 to the current position.
   */
  truncate?(position: number): void;
  /** Frees GPU buffers or other resources. */
  dispose(): void;
}
