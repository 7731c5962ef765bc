/**
 * One calibration run: feeds every sequence through an engine's forward and backward
 * pass, accumulates the Fisher statistics, checkpoints them periodically next to the
 * output, and writes the statistics file when the last sequence is done.
 *
 * A run stopped by `stopAfter`, an abort signal or a crash leaves `<out>.partial`;
 * `resume: true` continues from it and writes the same bytes an uninterrupted run writes.
 *
 * @module
 */
import { FormatError, UsageError } from "../errors.ts";
import type { LoadedModel } from "../model/model.ts";
import { Progress } from "../util/progress.ts";
import { FisherAccumulator } from "./accumulator.ts";
import {
  hashWindows,
  loadCheckpoint,
  partialPath,
  type RunIdentity,
  saveCheckpoint,
} from "./checkpoint.ts";
import type { CalibrationData } from "./data.ts";
import type { GradientEngine } from "./engine.ts";
import { type FisherLabels, writeFisherStats } from "./fisher_file.ts";
import { sequenceLabelSeed } from "../ops/cross_entropy_backward.ts";

/** Options of {@linkcode calibrate}. */
export interface CalibrateOptions {
  /** Loaded model; its path goes into the metadata. */
  model: LoadedModel;
  /** Calibration sequences. */
  data: CalibrationData;
  /** Engine that runs the passes. */
  engine: GradientEngine;
  /** Output path of the statistics file. */
  out: string;
  /** Also accumulate full G [out, out] per layer. Default false. */
  fullG?: boolean;
  /**
   * Labels of the backward pass: "data" backpropagates the next tokens (empirical
   * Fisher), "model" labels drawn from the model's own distribution (true Fisher, the
   * Hessian of a KL divergence to the model). Default "data".
   */
  labels?: FisherLabels;
  /** Seed of the drawn labels with labels "model". Default 0. */
  labelSeed?: number;
  /** Continue from `<out>.partial`. Default false. */
  resume?: boolean;
  /** No progress on stderr. Default false. */
  quiet?: boolean;
  /** Seconds between checkpoints. Default 60. */
  checkpointSeconds?: number;
  /** Stop after this many sequences in this call, leaving the partial state (as an interruption would). */
  stopAfter?: number;
  /** When aborted, the run finishes its current sequence, checkpoints and returns. */
  signal?: AbortSignal;
}

/** Outcome of a calibration run. */
export interface CalibrateResult {
  /** Whether the statistics file was written (false when stopped early). */
  complete: boolean;
  /** Sequences accumulated so far, resumed ones included. */
  sequences: number;
  /** Sequences run in this call. */
  sequencesThisRun: number;
  /** Mean per-sequence loss so far (nats). */
  meanLoss: number;
  /** Tokens per second of this call (forward and backward). */
  tokensPerSecond: number;
}

/**
 * Runs calibration and writes the statistics file.
 *
 * @example Calibrate on the CPU engine
 * ```ts ignore
 * const engine = await CpuEngine.create(model.config, model.weights);
 * await calibrate({ model, data, engine, out: "fisher.safetensors" });
 * ```
 * @param options Model, data, engine, output and resume options.
 * @throws {UsageError} When partial state exists without `resume`, or data is empty.
 * @throws {FormatError} When the partial state is unreadable or from another run.
 */
export async function calibrate(options: CalibrateOptions): Promise<CalibrateResult> {
  const { model, data, engine, out } = options;
  const fullG = options.fullG ?? false;
  const labels = options.labels ?? "data";
  const labelSeed = labels === "model" ? options.labelSeed ?? 0 : null;
  if (labelSeed !== null) checkLabelSeed(labelSeed, "label seed");
  const seqLen = data.windows[0]?.length ?? 0;
  if (data.windows.length === 0) throw new UsageError("No calibration sequences: add data");
  if (seqLen < 2) {
    throw new UsageError(`Calibration sequences need at least 2 tokens, sequence 0 has ${seqLen}`);
  }
  const uneven = data.windows.findIndex((w) => w.length !== seqLen);
  if (uneven >= 0) {
    throw new UsageError(
      `Calibration sequences must have the same length: sequence 0 has ${seqLen} tokens, sequence ${uneven} has ${
        data.windows[uneven].length
      } tokens`,
    );
  }
  const id: RunIdentity = {
    model: model.path,
    data: data.description,
    dataHash: hashWindows(data.windows),
    seqLen,
    sequences: data.windows.length,
    seed: data.seed === null ? "none" : String(data.seed),
    fullG,
    labels: labelSeed === null ? "data" : `model seed ${labelSeed}`,
  };
  const sidecar = partialPath(out);
  const acc = new FisherAccumulator(model.config, { fullG });
  if (options.resume) {
    await loadCheckpoint(sidecar, acc, id);
  } else if (await exists(sidecar)) {
    throw new UsageError(
      `${sidecar}: partial state of an interrupted run exists; pass --resume to continue it, or delete it to start over`,
    );
  }
  await engine.load(acc);

  // The reporter counts this call's sequences, so its rate and time left stay right after a resume.
  const label = `calibrate (${engine.name}${
    acc.sequences ? `, resumed at sequence ${acc.sequences}` : ""
  })`;
  const progress = new Progress(label, data.windows.length - acc.sequences, {
    quiet: options.quiet,
    unit: "sequences",
  });
  const checkpointMs = (options.checkpointSeconds ?? 60) * 1000;
  let lastCheckpoint = performance.now();
  const start = performance.now();
  let ranThisCall = 0;
  const checkpoint = async () => {
    await engine.store(acc);
    await saveCheckpoint(sidecar, acc, id);
    lastCheckpoint = performance.now();
  };

  while (acc.sequences < data.windows.length) {
    if (
      options.signal?.aborted ||
      (options.stopAfter !== undefined && ranThisCall >= options.stopAfter)
    ) {
      await checkpoint();
      progress.finish(`stopped; resume with --resume`);
      return result(false);
    }
    const window = data.windows[acc.sequences];
    const seed = labelSeed === null ? null : sequenceLabelSeed(labelSeed, acc.sequences);
    const loss = await engine.accumulate(window, acc, seed);
    acc.endSequence(window.length, loss);
    ranThisCall++;
    const tokensPerSecond = (ranThisCall * seqLen) / ((performance.now() - start) / 1000);
    progress.advance(
      1,
      `${tokensPerSecond.toFixed(0)} tokens/s, loss ${(acc.lossSum / acc.sequences).toFixed(4)}`,
    );
    if (performance.now() - lastCheckpoint >= checkpointMs && acc.sequences < data.windows.length) {
      await checkpoint();
    }
  }

  await engine.store(acc);
  const stats = acc.finalize();
  await writeFisherStats(out, stats, {
    model: model.path,
    data: data.description,
    seqLen,
    sequences: acc.sequences,
    tokens: acc.tokens,
    seed: data.seed,
    fullG,
    meanLoss: acc.lossSum / acc.sequences,
    labels,
    labelSeed,
  });
  await Deno.remove(sidecar).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  progress.finish(`wrote ${out}`);
  return result(true);

  function result(complete: boolean): CalibrateResult {
    const seconds = (performance.now() - start) / 1000;
    return {
      complete,
      sequences: acc.sequences,
      sequencesThisRun: ranThisCall,
      meanLoss: acc.sequences ? acc.lossSum / acc.sequences : NaN,
      tokensPerSecond: seconds > 0 ? (ranThisCall * seqLen) / seconds : 0,
    };
  }
}

/**
 * Checks a seed of labels drawn from the model: the draws hash it as a 32-bit integer, so
 * larger values would repeat smaller ones.
 *
 * @example
 * ```ts
 * import { checkLabelSeed } from "./calibrate.ts";
 * checkLabelSeed(7, "--seed");
 * ```
 * @param seed The seed.
 * @param name How the message names it (an option or a field).
 * @param context Words the message adds after the value. Default none.
 * @throws {UsageError} When the seed is not an integer from 0 to 2^32 - 1.
 */
export function checkLabelSeed(seed: number, name: string, context = ""): void {
  if (!(Number.isSafeInteger(seed) && seed >= 0 && seed < 2 ** 32)) {
    throw new UsageError(
      `Invalid ${name} ${seed}${context}: expected an integer from 0 to ${2 ** 32 - 1}`,
    );
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw new FormatError(path, "", `Cannot inspect: ${(err as Error).message}`);
  }
}
