/**
 * The training loop: seeded batches of windows from a token stream, AdamW with warmup and
 * cosine decay and global-norm clipping, periodic held-out loss, and checkpoints that
 * resume exactly.
 *
 * Batching: step s (0-based) draws its B window starts from `new Rng(mixSeed(seed, s))`.
 * The batch of a step thus depends only on the seed and the step number, so the RNG state
 * a checkpoint needs is the step count. Each window is [BOS, T - 1 tokens of the stream],
 * so the model always reads from BOS at position 0, and evaluation does the same.
 *
 * @module
 */
import { expectedTensors, type ModelConfig } from "../model/config.ts";
import { UsageError } from "../errors.ts";
import { Rng } from "../util/rng.ts";
import { Progress } from "../util/progress.ts";
import { AdamW, clipGradNorm, isDecayed } from "./adamw.ts";
import { learningRate } from "./schedule.ts";
import type { GradientEngine } from "./gradient_engine.ts";
import { loadTrainCheckpoint, saveTrainCheckpoint, type TrainHistory } from "./train_checkpoint.ts";

/** Tokenized training data. */
export interface TrainingData {
  /** Training token stream (documents joined by the end-of-text id). */
  train: Int32Array;
  /** Held-out token stream, never trained on. */
  heldOut: Int32Array;
  /** Id put at position 0 of every window. */
  bosId: number;
}

/** Options of {@linkcode train}; every field that changes the result is in the checkpoint identity. */
export interface TrainOptions {
  /** Total optimizer steps. */
  steps: number;
  /** Sequences per step. */
  batchSize: number;
  /** Tokens per sequence, BOS included (at most the model's maxSeqLen). */
  seqLen: number;
  /** Seed of the batch sampler. */
  seed: number;
  /** Peak learning rate. */
  lr: number;
  /** Warmup steps. */
  warmup: number;
  /** Final learning rate as a share of the peak. Default 0.1. */
  minLrRatio?: number;
  /** AdamW decoupled weight decay. Default 0.1. */
  weightDecay?: number;
  /** AdamW beta1. Default 0.9. */
  beta1?: number;
  /** AdamW beta2. Default 0.95. */
  beta2?: number;
  /** Global gradient-norm limit; 0 disables. Default 1. */
  clip?: number;
  /** Held-out loss every this many steps (and at the end); 0 only at the end. Default 100. */
  evalEvery?: number;
  /** Held-out windows evaluated each time (the first ones, non-overlapping). Default 16. */
  evalWindows?: number;
  /** Checkpoint file; none written when absent. */
  checkpointPath?: string;
  /** Checkpoint every this many steps (and at the end). Default evalEvery. */
  checkpointEvery?: number;
  /** Continue from `checkpointPath` when it exists. Default false. */
  resume?: boolean;
  /** Stop after this step even if `steps` is larger (simulates an interruption in tests). */
  stopAfter?: number;
  /** Print nothing. Default false. */
  quiet?: boolean;
}

/** Result of {@linkcode train}. */
export interface TrainResult {
  /** Optimizer steps done. */
  step: number;
  /** Trained parameters (the same map that was passed in, updated). */
  params: Map<string, Float32Array>;
  /** Losses over the whole run, resumed parts included. */
  history: TrainHistory;
  /** Training tokens per second of this call. */
  tokensPerSecond: number;
}

/**
 * Creates initial weights: RMSNorm gains 1, matrices N(0, 0.02^2), and the two
 * projections that write into the residual stream (o_proj, down_proj) scaled by
 * 1/sqrt(2 * layers) as in GPT-2, so the residual's variance does not grow with depth.
 *
 * @param config Hyperparameters.
 * @param seed Seed of the initialisation.
 * @returns Tensors by canonical name, in {@linkcode expectedTensors} order.
 */
export function initParams(config: ModelConfig, seed: number): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const params = new Map<string, Float32Array>();
  const residualScale = 1 / Math.sqrt(2 * config.nLayers);
  for (const [name, shape] of expectedTensors(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1)); // shape [out, in] or [len]
    if (shape.length === 1) data.fill(name.endsWith(".bias") ? 0 : 1);
    else {
      const std = /o_proj|down_proj/.test(name) ? 0.02 * residualScale : 0.02;
      for (let i = 0; i < data.length; i++) data[i] = std * rng.normal();
    }
    params.set(name, data);
  }
  return params;
}

/**
 * Mixes a seed and a step into the seed of that step's batch sampler.
 *
 * @param seed Run seed.
 * @param step Optimizer step.
 */
export function mixSeed(seed: number, step: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  return (h ^ (h >>> 12)) >>> 0;
}

/**
 * Draws the batch of optimizer step `step`: B windows [bosId, T - 1 stream tokens].
 *
 * @param stream Training tokens, at least T - 1 of them.
 * @param step Optimizer step (0-based).
 * @param options Seed, batch size, window length and BOS id.
 * @returns B sequences of T ids.
 */
export function sampleBatch(
  stream: Int32Array,
  step: number,
  options: { seed: number; batchSize: number; seqLen: number; bosId: number },
): Int32Array[] {
  const body = options.seqLen - 1;
  const starts = stream.length - body + 1;
  if (starts < 1) {
    throw new UsageError(
      `Training stream has ${stream.length} tokens: --seq-len ${options.seqLen} needs at least ${body}`,
    );
  }
  const rng = new Rng(mixSeed(options.seed, step));
  const batch: Int32Array[] = [];
  for (let b = 0; b < options.batchSize; b++) {
    const start = rng.nextInt(starts);
    const seq = new Int32Array(options.seqLen); // [T]
    seq[0] = options.bosId;
    seq.set(stream.subarray(start, start + body), 1);
    batch.push(seq);
  }
  return batch;
}

/**
 * Cuts a held-out stream into non-overlapping windows [bosId, T - 1 tokens].
 *
 * @param stream Held-out tokens.
 * @param seqLen Window length T, BOS included.
 * @param bosId BOS id.
 * @param maxWindows Keep at most this many (the first ones); Infinity for all.
 */
export function evalWindows(
  stream: Int32Array,
  seqLen: number,
  bosId: number,
  maxWindows = Infinity,
): Int32Array[] {
  const body = seqLen - 1, out: Int32Array[] = [];
  for (let s = 0; s + body <= stream.length && out.length < maxWindows; s += body) {
    const seq = new Int32Array(seqLen);
    seq[0] = bosId;
    seq.set(stream.subarray(s, s + body), 1);
    out.push(seq);
  }
  return out;
}

/**
 * Mean held-out loss over windows, evaluated in batches.
 *
 * @param engine Engine holding the current weights.
 * @param windows Sequences of equal length.
 * @param batchSize Sequences per engine call.
 * @returns Mean loss in nats per predicted token.
 */
export async function meanLoss(
  engine: GradientEngine,
  windows: readonly Int32Array[],
  batchSize: number,
): Promise<number> {
  let sum = 0;
  for (let i = 0; i < windows.length; i += batchSize) {
    const part = windows.slice(i, i + batchSize);
    sum += (await engine.loss(part)) * part.length;
  }
  return sum / windows.length;
}

/**
 * Trains `params` in place with `engine` for `options.steps` optimizer steps.
 *
 * @example
 * ```ts ignore
 * const params = initParams(config, 1);
 * const engine = await ReferenceGradientEngine.create(config, params);
 * const r = await train(engine, params, data, { steps: 100, batchSize: 4, seqLen: 64, seed: 1, lr: 3e-3, warmup: 10 });
 * ```
 * @param engine Loss and gradient engine (its weights are replaced at the start).
 * @param params Parameters by canonical name, updated in place.
 * @param data Training and held-out token streams.
 * @param options Schedule, batching, evaluation and checkpoints.
 * @returns Final step, parameters and loss history.
 * @throws {UsageError} On bad options or a checkpoint from a different run.
 */
export async function train(
  engine: GradientEngine,
  params: Map<string, Float32Array>,
  data: TrainingData,
  options: TrainOptions,
): Promise<TrainResult> {
  const o = withDefaults(options, engine.config);
  const shapes = expectedTensors(engine.config);
  const decayed = new Set(
    [...shapes].filter(([name, shape]) => isDecayed(name, shape)).map(([name]) => name),
  );
  const optimizer = new AdamW(params, decayed, {
    beta1: o.beta1,
    beta2: o.beta2,
    weightDecay: o.weightDecay,
  });
  const identity = runIdentity(o, engine.config, data);
  const log = (line: string) =>
    o.quiet || Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
  let history: TrainHistory = { train: [], heldOut: [], seconds: 0 };
  let step = 0;

  if (o.resume && o.checkpointPath && await exists(o.checkpointPath)) {
    const ckpt = await loadTrainCheckpoint(o.checkpointPath);
    checkIdentity(o.checkpointPath, ckpt.identity, identity);
    for (const [name, p] of params) {
      const saved = ckpt.params.get(name);
      if (!saved || saved.data.length !== p.length) {
        throw new UsageError(
          `Checkpoint ${o.checkpointPath} lacks ${name} of ${p.length} values: it belongs to another model`,
        );
      }
      p.set(saved.data);
    }
    optimizer.loadState(ckpt.optimizer);
    step = ckpt.step;
    history = ckpt.history;
    log(`resumed from ${o.checkpointPath} at step ${step}`);
  }
  await engine.setWeights(params);

  const heldOut = evalWindows(data.heldOut, o.seqLen, data.bosId, o.evalWindows);
  if (heldOut.length === 0) {
    throw new UsageError(
      `Held-out stream has ${data.heldOut.length} tokens: fewer than one window of --seq-len ${o.seqLen}`,
    );
  }
  const last = Math.min(o.steps, o.stopAfter ?? o.steps);
  const tokensPerStep = o.batchSize * (o.seqLen - 1);
  const progress = new Progress("train", Math.max(0, last - step) * tokensPerStep, {
    quiet: o.quiet,
    unit: "tokens",
    intervalSeconds: 10,
  });
  const started = performance.now();
  const secondsBefore = history.seconds;
  const save = async () => {
    if (!o.checkpointPath) return;
    history.seconds = secondsBefore + (performance.now() - started) / 1000;
    const named = new Map(
      [...params].map(([name, data]) => [name, { shape: shapes.get(name)!, data }]),
    );
    await saveTrainCheckpoint(o.checkpointPath, {
      step,
      params: named,
      optimizer: optimizer.state,
      identity,
      history,
    });
  };
  const evaluate = async () => {
    const loss = await meanLoss(engine, heldOut, o.batchSize);
    history.heldOut.push([step, loss]);
    log(
      `step ${step}: held-out loss ${loss.toFixed(4)} (perplexity ${
        Math.exp(loss).toFixed(2)
      }, ${heldOut.length} windows)`,
    );
  };

  while (step < last) {
    // one step: batch, gradients, clipping, AdamW at the scheduled rate
    const batch = sampleBatch(data.train, step, { ...o, bosId: data.bosId });
    const { loss, grads } = await engine.gradients(batch);
    if (!Number.isFinite(loss)) {
      throw new UsageError(
        `Training loss became ${loss} at step ${step + 1}: lower --lr or raise --warmup`,
      );
    }
    const norm = clipGradNorm(grads, o.clip);
    const lr = learningRate(step, {
      peak: o.lr,
      warmup: o.warmup,
      total: o.steps,
      minRatio: o.minLrRatio,
    });
    optimizer.step(grads, lr);
    await engine.setWeights(params);
    step++;
    history.train.push([step, loss, lr, norm]);
    progress.advance(
      tokensPerStep,
      `step ${step}/${o.steps} loss ${loss.toFixed(4)} lr ${lr.toExponential(2)}`,
    );

    if (o.evalEvery > 0 && step % o.evalEvery === 0 && step < o.steps) await evaluate();
    if (o.checkpointEvery > 0 && step % o.checkpointEvery === 0) await save();
  }
  if (step === o.steps && history.heldOut.at(-1)?.[0] !== step) await evaluate();
  await save();
  progress.finish();
  const seconds = (performance.now() - started) / 1000;
  return { step, params, history, tokensPerSecond: seconds > 0 ? (progress.done / seconds) : 0 };
}

type ResolvedOptions =
  & Required<Omit<TrainOptions, "checkpointPath" | "stopAfter">>
  & Pick<TrainOptions, "checkpointPath" | "stopAfter">;

function withDefaults(options: TrainOptions, config: ModelConfig): ResolvedOptions {
  const evalEvery = options.evalEvery ?? 100;
  const o: ResolvedOptions = {
    minLrRatio: 0.1,
    weightDecay: 0.1,
    beta1: 0.9,
    beta2: 0.95,
    clip: 1,
    evalWindows: 16,
    checkpointEvery: evalEvery,
    resume: false,
    quiet: false,
    ...options,
    evalEvery,
  };
  const positive = {
    steps: o.steps,
    batchSize: o.batchSize,
    seqLen: o.seqLen - 1,
    evalWindows: o.evalWindows,
  };
  for (const [key, v] of Object.entries(positive)) {
    if (!(Number.isSafeInteger(v) && v > 0)) {
      throw new UsageError(
        `Option ${key}: expected a positive integer, got ${key === "seqLen" ? v + 1 : v}`,
      );
    }
  }
  if (o.seqLen > config.maxSeqLen) {
    throw new UsageError(
      `Option seqLen ${o.seqLen} exceeds the model's maxSeqLen ${config.maxSeqLen}`,
    );
  }
  if (!(o.lr > 0)) throw new UsageError(`Option lr: expected a positive number, got ${o.lr}`);
  if (!(Number.isSafeInteger(o.warmup) && o.warmup >= 0)) {
    throw new UsageError(`Option warmup: expected an integer >= 0, got ${o.warmup}`);
  }
  return o;
}

/** The settings a resumed run must share with the run that wrote the checkpoint. */
function runIdentity(
  o: ResolvedOptions,
  config: ModelConfig,
  data: TrainingData,
): Record<string, unknown> {
  return {
    config,
    steps: o.steps,
    batchSize: o.batchSize,
    seqLen: o.seqLen,
    seed: o.seed,
    lr: o.lr,
    warmup: o.warmup,
    minLrRatio: o.minLrRatio,
    weightDecay: o.weightDecay,
    beta1: o.beta1,
    beta2: o.beta2,
    clip: o.clip,
    data: { train: fingerprint(data.train), heldOut: fingerprint(data.heldOut), bosId: data.bosId },
  };
}

/** Length and FNV-1a hash of a token stream, so a resume on other data is refused. */
function fingerprint(tokens: Int32Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < tokens.length; i++) h = Math.imul(h ^ tokens[i], 0x01000193) >>> 0;
  return `${tokens.length}:${h.toString(16)}`;
}

function checkIdentity(
  path: string,
  saved: Record<string, unknown>,
  current: Record<string, unknown>,
): void {
  for (const key of Object.keys(current)) {
    const a = JSON.stringify(saved[key]), b = JSON.stringify(current[key]);
    if (a !== b) {
      throw new UsageError(
        `Checkpoint ${path} was written with ${key} ${a}, this run has ${b}: pass the same settings to resume, or a new --out`,
      );
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
