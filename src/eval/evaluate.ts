/**
 * Perplexity and KL divergence of a causal language model over token documents, in
 * non-overlapping windows of the context length.
 *
 * Protocol (what the numbers mean):
 * - Each document is cut into windows of `ctx` tokens; a last window shorter than 2
 *   tokens is dropped because it scores nothing. Windows never cross documents.
 * - Each window starts at position 0 with an empty KV cache. Row t of its logits predicts
 *   token t + 1, so a window of T tokens scores T - 1 tokens (positions 1..T-1), and its
 *   last token is never fed to the model.
 * - With a reference model, KL(P_ref || P_model) and top-1 agreement are measured on
 *   the same T - 1 rows. Everything is computed in f64 from f32 logits via log-softmax.
 *
 * @module
 */
import type { CausalLM } from "../model/causal_lm.ts";
import type { ModelConfig } from "../model/config.ts";
import type { Progress } from "../util/progress.ts";
import { UsageError } from "../errors.ts";
import { logSoftmax } from "./log_softmax.ts";
import { NllStats } from "./perplexity.ts";
import { klDivergence, KldStats } from "./kl_divergence.ts";

/**
 * Logit elements (rows * vocab) requested per forward call. Windows are fed in chunks of
 * at most this many so that memory stays bounded on large vocabularies (64 MiB of f32).
 */
export const MAX_LOGITS_PER_FORWARD = 1 << 24;

/** Options of {@linkcode evaluate}. */
export interface EvaluateOptions {
  /** Window length in tokens, 2..maxSeqLen; default the model's maxSeqLen. */
  ctx?: number;
  /** Reference model for KL divergence and top-1 agreement; same vocabulary required. */
  ref?: CausalLM;
  /** Progress reporter, advanced by the tokens of each finished window. */
  progress?: Progress;
  /** Logit elements per forward call; default {@linkcode MAX_LOGITS_PER_FORWARD}. */
  maxLogitsPerForward?: number;
}

/**
 * Evaluation results. Field names are the keys of `deno task eval --json`; log-likelihoods
 * and divergences are in nats per token.
 */
export interface EvalResult {
  /** Perplexity, exp(nll). */
  ppl: number;
  /** Mean negative log-likelihood per scored token. */
  nll: number;
  /** Standard error of `nll`. */
  nll_stderr: number;
  /** Number of scored tokens (the predictions, T - 1 per window). */
  tokens: number;
  /** Number of windows evaluated. */
  windows: number;
  /** Window length used. */
  ctx: number;
  /** Perplexity of the reference model on the same tokens. */
  ref_ppl?: number;
  /** Mean KL(P_ref || P_model). */
  kld_mean?: number;
  /** Standard error of `kld_mean`. */
  kld_stderr?: number;
  /** Median of the per-token KL divergences. */
  kld_median?: number;
  /** 99th percentile of the per-token KL divergences. */
  kld_p99?: number;
  /** Largest per-token KL divergence. */
  kld_max?: number;
  /** Fraction of scored positions where both models' most likely token agrees. */
  top1_agreement?: number;
  /** Standard error of `top1_agreement`. */
  top1_stderr?: number;
}

/** One window: `length` tokens of document `doc` starting at `start`. */
export interface EvalWindow {
  doc: number;
  start: number;
  length: number;
}

/**
 * Cuts documents into non-overlapping windows of `ctx` tokens, dropping a last window
 * shorter than 2 tokens.
 *
 * @example 10 tokens in windows of 4: lengths 4, 4, 2
 * ```ts
 * import { splitWindows } from "./evaluate.ts";
 * const lengths = splitWindows([10], 4).map((w) => w.length);
 * if (lengths.join(",") !== "4,4,2") throw new Error();
 * ```
 * @param documentLengths Token count of each document.
 * @param ctx Window length, at least 2.
 */
export function splitWindows(documentLengths: readonly number[], ctx: number): EvalWindow[] {
  const windows: EvalWindow[] = [];
  documentLengths.forEach((n, doc) => {
    for (let start = 0; start < n; start += ctx) {
      const length = Math.min(ctx, n - start);
      if (length >= 2) windows.push({ doc, start, length });
    }
  });
  return windows;
}

/**
 * Throws unless `ctx` is an integer in [2, config.maxSeqLen].
 *
 * @param ctx Requested window length.
 * @param config The model's config.
 * @param source Name of the model (its path) for the message.
 * @throws {UsageError} Naming `--ctx`, the value and the allowed range.
 */
export function checkContextLength(ctx: number, config: ModelConfig, source: string): void {
  if (!Number.isSafeInteger(ctx) || ctx < 2) {
    throw new UsageError(
      `Invalid --ctx ${ctx}: a window needs at least 2 tokens to score one prediction`,
    );
  }
  if (ctx > config.maxSeqLen) {
    throw new UsageError(
      `Invalid --ctx ${ctx}: ${source} has a context of ${config.maxSeqLen} tokens; pass --ctx ${config.maxSeqLen} or less`,
    );
  }
}

/**
 * Measures perplexity of `lm` on `tokens` and, with `options.ref`, the KL divergence of
 * its next-token distribution from the reference's. Both models' KV caches are reset.
 *
 * @example Perplexity of the reference forward on a sampled stream
 * ```ts ignore
 * const ids = await sampleTokenStream(lm, { tokens: 1024, windowLength: 256, seed: 2 });
 * const result = await evaluate(lm, ids, { ctx: 256 });
 * console.log(result.ppl, result.tokens); // tokens = 4 * 255
 * ```
 * @param lm Model to evaluate.
 * @param tokens One token stream or several documents; ids must be in the vocabulary.
 * @param options Window length, reference model and progress.
 * @returns Perplexity and, with a reference, the KL statistics.
 * @throws {UsageError} On a bad `ctx`, mismatched vocabularies, out-of-range ids or no
 *   window of at least 2 tokens.
 */
export async function evaluate(
  lm: CausalLM,
  tokens: Int32Array | Int32Array[],
  options: EvaluateOptions = {},
): Promise<EvalResult> {
  const docs = Array.isArray(tokens) ? tokens : [tokens];
  const vocab = lm.config.vocabSize;
  const ref = options.ref;
  const ctx = options.ctx ?? lm.config.maxSeqLen;
  checkContextLength(ctx, lm.config, "the model");
  if (ref) {
    if (ref === lm) {
      throw new UsageError(
        "The reference model must be a separate instance: both share one KV cache otherwise",
      );
    }
    checkContextLength(ctx, ref.config, "the reference model");
    if (ref.config.vocabSize !== vocab) {
      throw new UsageError(
        `The reference model's vocabulary (${ref.config.vocabSize}) differs from the model's (${vocab}): KL divergence needs the same tokenizer`,
      );
    }
  }
  docs.forEach((doc, d) => checkIds(doc, vocab, d));
  const windows = splitWindows(docs.map((d) => d.length), ctx);
  if (windows.length === 0) {
    const lengths = docs.map((d) => d.length).join(" + ");
    throw new UsageError(`No window of at least 2 tokens: the data contains ${lengths} tokens`);
  }

  const rowsPerForward = Math.max(
    1,
    Math.floor((options.maxLogitsPerForward ?? MAX_LOGITS_PER_FORWARD) / vocab),
  );
  const nll = new NllStats();
  const refNll = new NllStats();
  const kld = new KldStats();
  const logP = new Float64Array(vocab); // [vocab] model log-probabilities of one row
  const logPRef = new Float64Array(vocab); // [vocab] reference log-probabilities of one row

  for (const [w, window] of windows.entries()) {
    const ids = docs[window.doc].subarray(window.start, window.start + window.length);
    lm.reset();
    ref?.reset();

    // feed tokens 0..T-2 in chunks; row r of a chunk starting at c predicts ids[c + r + 1]
    for (let c = 0; c + 1 < ids.length; c += rowsPerForward) {
      const input = ids.subarray(c, Math.min(c + rowsPerForward, ids.length - 1));
      const logits = await lm.forward(input); // [rows, vocab]
      const refLogits = ref ? await ref.forward(input) : undefined; // [rows, vocab]
      for (let r = 0; r < input.length; r++) {
        const target = ids[c + r + 1];
        const top = logSoftmax(logits, r * vocab, vocab, logP);
        const loss = -logP[target];
        checkFiniteLoss(loss, "model", w, c + r);
        nll.add(loss);
        if (refLogits) {
          const refTop = logSoftmax(refLogits, r * vocab, vocab, logPRef);
          const refLoss = -logPRef[target];
          checkFiniteLoss(refLoss, "reference model", w, c + r);
          refNll.add(refLoss);
          kld.add(klDivergence(logPRef, logP), top === refTop);
        }
      }
    }
    options.progress?.advance(window.length);
  }
  lm.reset();
  ref?.reset();

  const result: EvalResult = {
    ppl: nll.perplexity,
    nll: nll.mean,
    nll_stderr: nll.stderr,
    tokens: nll.count,
    windows: windows.length,
    ctx,
  };
  if (ref) {
    result.ref_ppl = refNll.perplexity;
    result.kld_mean = kld.mean;
    result.kld_stderr = kld.stderr;
    result.kld_median = kld.percentile(0.5);
    result.kld_p99 = kld.percentile(0.99);
    result.kld_max = kld.percentile(1);
    result.top1_agreement = kld.top1Agreement;
    result.top1_stderr = kld.top1Stderr;
  }
  return result;
}

/** Throws when a loss is NaN or infinite, which only broken weights or kernels produce. */
function checkFiniteLoss(loss: number, source: string, window: number, position: number): void {
  if (!Number.isFinite(loss)) {
    throw new Error(
      `Non-finite log-likelihood ${loss} in window ${window} at position ${position}: ` +
        `the ${source} produced NaN or infinite logits`,
    );
  }
}

function checkIds(doc: Int32Array, vocab: number, d: number): void {
  for (let i = 0; i < doc.length; i++) {
    if (!(doc[i] >= 0 && doc[i] < vocab)) {
      throw new UsageError(
        `Token id ${
          doc[i]
        } at index ${i} of document ${d} is outside the model's vocabulary [0, ${vocab})`,
      );
    }
  }
}
