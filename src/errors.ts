/**
 * Typed errors shared by every layer. Each carries the file (or other source) and the
 * field it concerns, so that tasks can print one line that names what is wrong and how
 * to fix it.
 *
 * @module
 */

/** Invalid or unsupported content in a checkpoint, statistics or quantized-model file. */
export class FormatError extends Error {
  /** Path of the file that failed to parse. */
  readonly file: string;
  /** Header key, tensor name or field that is wrong, or "" when the whole file is. */
  readonly field: string;

  /**
   * Creates a format error.
   *
   * @example Report a missing config key
   * ```ts
   * import { FormatError } from "./errors.ts";
   * const err = new FormatError("m/config.json", "hidden_size", "Missing key: add it to the config");
   * if (!err.message.includes("hidden_size")) throw new Error("field not named");
   * ```
   * @param file Path of the file.
   * @param field Key, tensor or field name.
   * @param detail What is wrong and how to fix it.
   */
  constructor(file: string, field: string, detail: string) {
    super(field ? `${file}: ${field}: ${detail}` : `${file}: ${detail}`);
    this.name = "FormatError";
    this.file = file;
    this.field = field;
  }
}

/** Tensor shapes that do not agree with each other or with a model config. */
export class ShapeError extends Error {
  /**
   * Creates a shape error.
   *
   * @param detail Which tensor, the shape received and the shape expected.
   */
  constructor(detail: string) {
    super(detail);
    this.name = "ShapeError";
  }
}

/** WebGPU is unavailable or a GPU operation failed. */
export class GpuError extends Error {
  /**
   * Creates a GPU error.
   *
   * @param detail What failed and what to do next.
   */
  constructor(detail: string) {
    super(detail);
    this.name = "GpuError";
  }
}

/** Invalid command-line or options-object input. */
export class UsageError extends Error {
  /**
   * Creates a usage error.
   *
   * @param detail The option, the value received and what is allowed.
   */
  constructor(detail: string) {
    super(detail);
    this.name = "UsageError";
  }
}
