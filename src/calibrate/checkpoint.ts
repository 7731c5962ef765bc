/**
 * The resumable state of a calibration run: a sidecar file next to the output
 * (`<out>.partial`) that contains the accumulator's f64 sums exactly, the counts, and the
 * run's identity (model, data hash, sequence length, options). It is a safetensors file
 * whose tensors are U8 byte arrays of little-endian f64 values, because the sums must
 * survive a round trip bit for bit for a resumed run to write the same file as an
 * uninterrupted one. It is written atomically, so an interruption during a write leaves
 * the previous checkpoint intact.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from "../formats/safetensors.ts";
import { type FisherAccumulator, stateShapes } from "./accumulator.ts";

/** Value of the sidecar's `format` metadata key. */
export const PARTIAL_FORMAT = "rsavq-fisher-partial";
const PARTIAL_VERSION = "1";

/** Identity of a run: a resumed run must match every field. */
export interface RunIdentity {
  /** Model path. */
  model: string;
  /** Description of the data. */
  data: string;
  /** FNV-1a hash of every calibration token, as 8 hex digits. */
  dataHash: string;
  /** Tokens per sequence. */
  seqLen: number;
  /** Sequences the whole run covers. */
  sequences: number;
  /** Seed, or "none". */
  seed: string;
  /** Whether full G is kept. */
  fullG: boolean;
  /** Labels of the backward pass: "data", or "model seed S" for labels drawn from the model. */
  labels: string;
}

/**
 * Returns the sidecar path of an output path.
 *
 * @example
 * ```ts
 * import { partialPath } from "./checkpoint.ts";
 * if (partialPath("out/f.safetensors") !== "out/f.safetensors.partial") throw new Error();
 * ```
 * @param out Output path of the statistics file.
 */
export function partialPath(out: string): string {
  return `${out}.partial`;
}

/**
 * Writes the accumulator's sums and counts with the run identity, atomically.
 *
 * @param path Sidecar path.
 * @param acc Accumulator after its last completed sequence.
 * @param id Run identity.
 */
export async function saveCheckpoint(
  path: string,
  acc: FisherAccumulator,
  id: RunIdentity,
): Promise<void> {
  assertLittleEndian();
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, sum] of acc.sums) {
    tensors[name] = {
      dtype: "U8",
      shape: [sum.byteLength],
      data: new Uint8Array(sum.buffer, sum.byteOffset, sum.byteLength),
    };
  }
  await writeSafetensors(path, tensors, {
    format: PARTIAL_FORMAT,
    version: PARTIAL_VERSION,
    ...identityMetadata(id),
    sequences_done: String(acc.sequences),
    tokens_done: String(acc.tokens),
    // String(number) is the shortest text that parses back to the same f64.
    loss_sum: String(acc.lossSum),
  });
}

/**
 * Loads a sidecar into `acc`, after checking that it belongs to the run `id`.
 *
 * @param path Sidecar path.
 * @param acc Zeroed accumulator of the same model and options.
 * @param id Identity of the run being resumed.
 * @throws {FormatError} When the sidecar is unreadable, from another run, or its sums do not match the model.
 */
export async function loadCheckpoint(
  path: string,
  acc: FisherAccumulator,
  id: RunIdentity,
): Promise<void> {
  assertLittleEndian();
  let file: SafetensorsFile;
  try {
    file = await SafetensorsFile.open(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new FormatError(
        path,
        "",
        "No partial state to resume: run without --resume to start from the beginning",
      );
    }
    if (err instanceof FormatError) {
      throw new FormatError(
        path,
        "",
        `Unreadable partial state (${err.message}): delete it and run without --resume`,
      );
    }
    throw err;
  }
  try {
    const meta = file.metadata;
    if (meta.format !== PARTIAL_FORMAT || meta.version !== PARTIAL_VERSION) {
      throw new FormatError(
        path,
        "__metadata__.format",
        `Expected ${PARTIAL_FORMAT} version ${PARTIAL_VERSION}, got ${meta.format} version ${meta.version}: delete it and run without --resume`,
      );
    }
    const want = identityMetadata(id);
    for (const [key, value] of Object.entries(want)) {
      // Partial states from before the labels option backpropagated the data's tokens.
      const stored = key === "labels" ? meta[key] ?? "data" : meta[key];
      if (stored !== value) {
        throw new FormatError(
          path,
          `__metadata__.${key}`,
          `The partial state was made with ${key} ${JSON.stringify(stored)}, this run has ${
            JSON.stringify(value)
          }: rerun with the original options, or delete it and run without --resume`,
        );
      }
    }
    const shapes = stateShapes(acc.layers, acc.fullG);
    if (file.tensors.size !== shapes.length) {
      throw new FormatError(
        path,
        "",
        `Holds ${file.tensors.size} sums, expected ${shapes.length} for this model: delete it and run without --resume`,
      );
    }
    for (const [name, count] of shapes) {
      const info = file.tensors.get(name);
      if (!info || info.dtype !== "U8" || info.byteLength !== count * 8) {
        throw new FormatError(
          path,
          name,
          `Missing or misshapen sum (expected ${count} f64 values): delete it and run without --resume`,
        );
      }
      const bytes = await file.readBytes(name);
      acc.sums.get(name)!.set(new Float64Array(bytes.buffer, bytes.byteOffset, count));
    }
    const done = Number(meta.sequences_done),
      tokens = Number(meta.tokens_done),
      lossSum = Number(meta.loss_sum);
    if (
      !Number.isSafeInteger(done) || done < 0 || done > id.sequences ||
      tokens !== done * id.seqLen || !Number.isFinite(lossSum)
    ) {
      throw new FormatError(
        path,
        "__metadata__.sequences_done",
        `Inconsistent counts (${meta.sequences_done} sequences, ${meta.tokens_done} tokens): delete it and run without --resume`,
      );
    }
    acc.sequences = done;
    acc.tokens = tokens;
    acc.lossSum = lossSum;
  } finally {
    file.close();
  }
}

/**
 * Hashes token windows with 32-bit FNV-1a, so a resumed run can tell that its data changed.
 *
 * @param windows Calibration sequences.
 * @returns 8 lowercase hex digits.
 */
export function hashWindows(windows: readonly ArrayLike<number>[]): string {
  let h = 0x811c9dc5;
  const mix = (byte: number) => {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  };
  for (const w of windows) {
    for (let i = 0; i < w.length; i++) {
      const id = w[i] >>> 0;
      mix(id & 0xff);
      mix((id >>> 8) & 0xff);
      mix((id >>> 16) & 0xff);
      mix(id >>> 24);
    }
    mix(0x5f); // window separator
  }
  return h.toString(16).padStart(8, "0");
}

function identityMetadata(id: RunIdentity): Record<string, string> {
  // Options first, so a mismatch names the option that changed rather than the data hash.
  return {
    model: id.model,
    seq_len: String(id.seqLen),
    sequences: String(id.sequences),
    seed: id.seed,
    full_g: String(id.fullG),
    labels: id.labels,
    data: id.data,
    data_hash: id.dataHash,
  };
}

function assertLittleEndian(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new Error(
      "Calibration checkpoints store little-endian f64 sums; this host is big-endian",
    );
  }
}
