/**
 * Training checkpoints: parameters, AdamW moments, the step count, the batching RNG
 * position and the loss history in one safetensors file, written atomically, so a
 * resumed run continues bit for bit where the interrupted one stopped.
 *
 * Layout:
 * - tensors `param/NAME`, `adam_m/NAME` and `adam_v/NAME`, f32 in the parameter's shape;
 * - metadata `format`, `version`, `step` (optimizer steps done), `identity` (JSON of the
 *   settings a resume must share) and `history` (JSON of the logged losses).
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from "../formats/safetensors.ts";
import type { AdamWState } from "./adamw.ts";

/** Value of the `format` metadata key. */
export const TRAIN_CHECKPOINT_FORMAT = "rsavq-train-checkpoint";
const VERSION = "1";

/** Losses logged by a run, kept across resumes. */
export interface TrainHistory {
  /** Training loss of every step: [step (1-based), loss, learning rate, gradient norm]. */
  train: [number, number, number, number][];
  /** Held-out loss: [step, mean loss in nats]. */
  heldOut: [number, number][];
  /** Seconds spent training before this checkpoint, over all resumed parts. */
  seconds: number;
}

/** Everything a checkpoint holds. */
export interface TrainCheckpoint {
  /** Optimizer steps done; batches are drawn per step, so this is also the RNG position. */
  step: number;
  /** Parameters by canonical name with shapes. */
  params: Map<string, { shape: number[]; data: Float32Array }>;
  /** AdamW moments. */
  optimizer: AdamWState;
  /** Settings a resume must share (seed, batch, schedule, data fingerprint...). */
  identity: Record<string, unknown>;
  /** Loss history so far. */
  history: TrainHistory;
}

/**
 * Writes a checkpoint atomically (temporary file, then rename).
 *
 * @param path Checkpoint file.
 * @param ckpt State to save.
 */
export async function saveTrainCheckpoint(path: string, ckpt: TrainCheckpoint): Promise<void> {
  const tensors: Record<string, TensorToWrite> = {};
  const f32 = (shape: number[], data: Float32Array): TensorToWrite => ({
    dtype: "F32",
    shape,
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  });
  for (const [name, { shape, data }] of ckpt.params) {
    tensors[`param/${name}`] = f32(shape, data);
    tensors[`adam_m/${name}`] = f32(shape, ckpt.optimizer.m.get(name)!);
    tensors[`adam_v/${name}`] = f32(shape, ckpt.optimizer.v.get(name)!);
  }
  await writeSafetensors(path, tensors, {
    format: TRAIN_CHECKPOINT_FORMAT,
    version: VERSION,
    step: String(ckpt.step),
    identity: JSON.stringify(ckpt.identity),
    history: JSON.stringify(ckpt.history),
  });
}

/**
 * Reads a checkpoint written by {@linkcode saveTrainCheckpoint}.
 *
 * @param path Checkpoint file.
 * @returns The saved state.
 * @throws {FormatError} When the file is not a training checkpoint of this version.
 */
export async function loadTrainCheckpoint(path: string): Promise<TrainCheckpoint> {
  const file = await SafetensorsFile.open(path);
  try {
    const meta = file.metadata;
    if (meta.format !== TRAIN_CHECKPOINT_FORMAT) {
      throw new FormatError(
        path,
        "format",
        `Expected ${TRAIN_CHECKPOINT_FORMAT}, got ${
          JSON.stringify(meta.format)
        }: pass a checkpoint written by deno task train`,
      );
    }
    if (meta.version !== VERSION) {
      throw new FormatError(
        path,
        "version",
        `Unsupported version ${meta.version}: expected ${VERSION}`,
      );
    }
    const step = Number(meta.step);
    if (!Number.isSafeInteger(step) || step < 0) {
      throw new FormatError(path, "step", `Expected a non-negative integer, got ${meta.step}`);
    }
    const params = new Map<string, { shape: number[]; data: Float32Array }>();
    const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
    for (const [key, info] of file.tensors) {
      if (!key.startsWith("param/")) continue;
      const name = key.slice("param/".length);
      params.set(name, { shape: [...info.shape], data: await file.readF32(key) });
      for (const [prefix, moments] of [["adam_m/", m], ["adam_v/", v]] as const) {
        if (!file.tensors.has(prefix + name)) {
          throw new FormatError(path, prefix + name, "Missing optimizer moment");
        }
        moments.set(name, await file.readF32(prefix + name));
      }
    }
    return {
      step,
      params,
      optimizer: { step, m, v },
      identity: parseJson(path, "identity", meta.identity) as Record<string, unknown>,
      history: parseJson(path, "history", meta.history) as TrainHistory,
    };
  } finally {
    file.close();
  }
}

function parseJson(path: string, field: string, text: string | undefined): unknown {
  try {
    return JSON.parse(text ?? "");
  } catch {
    throw new FormatError(path, field, "Missing or invalid JSON metadata");
  }
}
