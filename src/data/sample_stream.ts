/**
 * Token streams sampled from the model itself, for models without a tokenizer or text.
 * Each window starts with BOS at position 0 (as models trained on single documents
 * expect) and continues with tokens drawn at temperature 1 from the model.
 *
 * @module
 */
import type { CausalLM } from "../model/causal_lm.ts";
import { sampleToken } from "../model/sampler.ts";
import { Rng } from "../util/rng.ts";
import { UsageError } from "../errors.ts";
import type { Progress } from "../util/progress.ts";

/** Options of {@linkcode sampleTokenStream}. */
export interface SampleStreamOptions {
  /** Total number of tokens to produce (BOS tokens included). */
  tokens: number;
  /** Tokens per window, at most the model's context; default the model's maxSeqLen. */
  windowLength?: number;
  /** Seed of the generator. */
  seed: number;
  /** Sampling temperature; default 1 (the model's own distribution). */
  temperature?: number;
  /** Optional progress reporter, advanced by tokens. */
  progress?: Progress;
}

/**
 * Samples a token stream of `tokens` ids made of windows that each begin with BOS.
 * The last window is shorter when `tokens` is not a multiple of the window length.
 *
 * @example
 * ```ts ignore
 * const ids = await sampleTokenStream(lm, { tokens: 4096, windowLength: 256, seed: 1 });
 * ```
 * @param lm Model to sample from; its KV cache is reset.
 * @param options Size, window length, seed and temperature.
 * @returns Token ids, `options.tokens` long.
 */
export async function sampleTokenStream(
  lm: CausalLM,
  options: SampleStreamOptions,
): Promise<Int32Array> {
  const { tokens, seed } = options;
  const windowLength = options.windowLength ?? lm.config.maxSeqLen;
  const bos = lm.config.bosId;
  if (bos === undefined) {
    throw new UsageError("Cannot sample a token stream: the model has no BOS token id");
  }
  if (!(Number.isSafeInteger(tokens) && tokens > 0)) {
    throw new UsageError(`Expected a positive token count, got ${tokens}`);
  }
  if (!(windowLength >= 2 && windowLength <= lm.config.maxSeqLen)) {
    throw new UsageError(
      `Window length ${windowLength} must be between 2 and the model's context ${lm.config.maxSeqLen}`,
    );
  }
  const rng = new Rng(seed);
  const out = new Int32Array(tokens);
  for (let start = 0; start < tokens; start += windowLength) {
    const length = Math.min(windowLength, tokens - start);
    lm.reset();
    let token = bos;
    out[start] = token;
    for (let i = 1; i < length; i++) {
      const logits = await lm.forward([token], { lastOnly: true });
      token = sampleToken(logits, { temperature: options.temperature ?? 1 }, rng);
      out[start + i] = token;
    }
    options.progress?.advance(length);
  }
  lm.reset();
  return out;
}
