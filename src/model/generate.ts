/**
 * Text generation over any {@linkcode CausalLM}: prefill the prompt in one forward call,
 * then sample one token per call (temperature and top-p from a seeded generator) until a
 * stop id, the token budget or the end of the context.
 *
 * @module
 */
import type { CausalLM } from "./causal_lm.ts";
import { sampleToken } from "./sampler.ts";
import { Rng } from "../util/rng.ts";
import { UsageError } from "../errors.ts";

/** Options of {@linkcode generateTokens} and {@linkcode generate}. */
export interface GenerateOptions {
  /** Maximum number of tokens to generate. */
  maxTokens: number;
  /** Softmax temperature; 0 is greedy. Default 1. */
  temperature?: number;
  /** Nucleus mass in (0, 1]; 1 disables truncation. Default 1. */
  topP?: number;
  /** Seed of the sampler. Default 1. */
  seed?: number;
  /** Ids that end generation (not emitted); default the model's eosIds. Pass [] to never stop early. */
  stopIds?: readonly number[];
}

/** Reason generation ended. */
export type StopReason = "stop-id" | "max-tokens" | "context-end";

/** Counts and speeds of one generation. */
export interface GenerateStats {
  /** Prompt length in tokens. */
  promptTokens: number;
  /** Tokens emitted (stop id excluded). */
  generatedTokens: number;
  /** Seconds of the prompt's forward call. */
  prefillSeconds: number;
  /** Seconds of the single-token forward calls. */
  decodeSeconds: number;
  /** Prompt tokens per second of prefill. */
  prefillTokensPerSecond: number;
  /** Single-token forward calls per second (0 when there were none). */
  decodeTokensPerSecond: number;
  /** Reason generation ended. */
  stopReason: StopReason;
}

/** A model that may hold fewer positions than its config's maxSeqLen (GpuModel does). */
type WithContext = CausalLM & { readonly contextLength?: number };

/**
 * Streams generated token ids. The model's cache is reset first, so the prompt starts
 * at position 0. The generator returns the statistics when it finishes.
 *
 * @example Greedy ids, streamed
 * ```ts ignore
 * const stream = generateTokens(lm, [1], { maxTokens: 20, temperature: 0 });
 * for await (const id of stream) console.log(id);
 * ```
 * @param lm Model to run.
 * @param prompt Prompt token ids (at least one).
 * @param options Budget, sampling settings and stop ids.
 * @returns An async generator of token ids that returns the statistics.
 * @throws {UsageError} On an empty prompt, a prompt that fills the context or invalid options.
 */
export async function* generateTokens(
  lm: CausalLM,
  prompt: readonly number[],
  options: GenerateOptions,
): AsyncGenerator<number, GenerateStats, void> {
  const { maxTokens } = options;
  const temperature = options.temperature ?? 1, topP = options.topP ?? 1;
  const contextLength = (lm as WithContext).contextLength ?? lm.config.maxSeqLen;
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 0) {
    throw new UsageError(`maxTokens must be a non-negative integer, got ${maxTokens}`);
  }
  if (!(temperature >= 0)) {
    throw new UsageError(`temperature must be at least 0, got ${temperature}`);
  }
  if (!(topP > 0 && topP <= 1)) throw new UsageError(`topP must be in (0, 1], got ${topP}`);
  if (prompt.length === 0) {
    throw new UsageError(
      "The prompt is empty: pass at least one token (BOS for unconditional generation)",
    );
  }
  if (prompt.length >= contextLength) {
    throw new UsageError(
      `The prompt has ${prompt.length} tokens, which leaves no room in the ${contextLength}-token context`,
    );
  }
  const stopIds = new Set(options.stopIds ?? lm.config.eosIds ?? []);
  const rng = new Rng(options.seed ?? 1);
  const stats: GenerateStats = {
    promptTokens: prompt.length,
    generatedTokens: 0,
    prefillSeconds: 0,
    decodeSeconds: 0,
    prefillTokensPerSecond: 0,
    decodeTokensPerSecond: 0,
    stopReason: "max-tokens",
  };
  if (maxTokens === 0) return stats;

  lm.reset();
  let start = performance.now();
  let logits = await lm.forward(prompt, { lastOnly: true });
  stats.prefillSeconds = (performance.now() - start) / 1000;
  stats.prefillTokensPerSecond = prompt.length / stats.prefillSeconds;
  let decodeSteps = 0;
  while (true) {
    const token = sampleToken(logits, { temperature, topP }, rng);
    if (stopIds.has(token)) {
      stats.stopReason = "stop-id";
      break;
    }
    stats.generatedTokens++;
    yield token;
    if (stats.generatedTokens >= maxTokens) break;
    if (lm.position >= contextLength) {
      stats.stopReason = "context-end";
      break;
    }
    start = performance.now();
    logits = await lm.forward([token], { lastOnly: true });
    stats.decodeSeconds += (performance.now() - start) / 1000;
    decodeSteps++;
  }
  stats.decodeTokensPerSecond = decodeSteps > 0 ? decodeSteps / stats.decodeSeconds : 0;
  return stats;
}

/**
 * Generates to completion and returns the ids and statistics.
 *
 * @example Greedy continuation of BOS
 * ```ts ignore
 * const { tokens, stats } = await generate(lm, [1], { maxTokens: 64, temperature: 0 });
 * console.log(tokens.length, stats.decodeTokensPerSecond);
 * ```
 * @param lm Model to run.
 * @param prompt Prompt token ids.
 * @param options Budget, sampling settings and stop ids.
 * @param onToken Called with each id as it is generated.
 */
export async function generate(
  lm: CausalLM,
  prompt: readonly number[],
  options: GenerateOptions,
  onToken?: (id: number) => void,
): Promise<{ tokens: number[]; stats: GenerateStats }> {
  const tokens: number[] = [];
  const stream = generateTokens(lm, prompt, options);
  while (true) {
    const next = await stream.next();
    if (next.done) return { tokens, stats: next.value };
    tokens.push(next.value);
    onToken?.(next.value);
  }
}
