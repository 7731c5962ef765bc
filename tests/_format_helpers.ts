/**
 * Test helpers for the checkpoint-format tests: logits of a model through the reference
 * forward, their relative difference, and temporary output paths.
 *
 * @module
 */
import { join } from "node:path";
import type { ModelConfig } from "../src/model/config.ts";
import type { WeightStore } from "../src/model/model.ts";
import { ReferenceModel } from "../src/model/reference.ts";

/** Token ids fed to both models when comparing logits (BOS first, then stories260K ids). */
export const PROBE_TOKENS: readonly number[] = [1, 461, 401, 378, 455, 473, 299, 13, 431, 293];

/**
 * Runs the reference forward over `tokens` and returns all logits [T, vocab].
 *
 * @param config Model hyperparameters.
 * @param weights Tensor store.
 * @param tokens Ids below config.vocabSize.
 */
export async function referenceLogits(
  config: ModelConfig,
  weights: WeightStore,
  tokens: readonly number[],
): Promise<Float32Array> {
  const lm = await ReferenceModel.create(config, weights);
  return await lm.forward(tokens.map((t) => t % config.vocabSize));
}

/**
 * Returns max |a - b| / max |a|, the error measure of the conversion tests.
 *
 * @param a Reference logits.
 * @param b Logits to compare.
 */
export function relativeMaxDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`Length ${b.length} differs from ${a.length}`);
  let diff = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(a[i]));
  }
  return diff / scale;
}

/** Temporary directories made by this module, removed when the test process exits. */
const tempDirs: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const dir of tempDirs) Deno.removeSync(dir, { recursive: true });
});

/** Creates an empty temporary directory that is removed when the test process exits. */
export async function tempDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "rsavq-fmt-" });
  tempDirs.push(dir);
  return dir;
}

/**
 * Creates an empty temporary directory and returns a path inside it that does not exist yet.
 *
 * @param name Final path component.
 */
export async function freshPath(name: string): Promise<string> {
  return join(await tempDir(), name);
}

/**
 * Finds the byte offset just after the first occurrence of `text` in `bytes`.
 *
 * @param bytes File contents.
 * @param text ASCII text to find.
 * @throws {Error} When absent.
 */
export function offsetAfter(bytes: Uint8Array, text: string): number {
  const needle = new TextEncoder().encode(text);
  outer: for (let i = 0; i + needle.length <= bytes.length; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    return i + needle.length;
  }
  throw new Error(`${text} not found`);
}
