/**
 * Zero-shot multiple-choice evaluation: each choice is scored by the summed
 * log-likelihood of its continuation tokens given its context, following
 * lm-evaluation-harness (v0.4, Hugging Face backend):
 * - Text pairs are tokenized as the harness's `_encode_pair` does. Trailing whitespace of
 *   the context moves to the front of the continuation. The whole string and the context
 *   are encoded separately, and the continuation is the whole encoding after the
 *   context's token count. An empty context becomes the BOS id (EOS when there is none).
 * - No BOS is added by default, as the harness's `add_bos_token=False` default;
 *   `addBos` changes that. Token-id questions are used exactly as written.
 * - A sequence longer than the model's context keeps its last maxSeqLen + 1 tokens
 *   (left truncation), so the continuation is always scored in full.
 *
 * Choices of one question share the forward pass of their common prefix (the context,
 * and more when choices start alike). The prefix runs once; each choice then continues
 * from the cached prefix. A model with a `truncate(position)` method (see
 * {@linkcode TruncatableLM}) is cut back to the prefix in O(1) for the next choice.
 * Other models are reset and re-fed the prefix without reading back its logits, which
 * costs (choices - 1) * prefix extra token positions per question.
 *
 * @module
 */
import type { CausalLM } from "../model/causal_lm.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { Progress } from "../util/progress.ts";
import { UsageError } from "../errors.ts";
import { ChoiceLineError, type ChoiceQuestion } from "../data/choice_tasks.ts";
import { logSoftmax } from "./log_softmax.ts";
import { MAX_LOGITS_PER_FORWARD } from "./evaluate.ts";
import {
  type AverageAccuracy,
  type AverageDifference,
  type ChoiceQuestionScore,
  compareChoiceScores,
  pickChoices,
  summarizeChoiceScores,
  type TaskAccuracy,
  type TaskDifference,
} from "./choice_metrics.ts";

/**
 * A model whose KV cache can be cut back to an earlier position, so that several
 * continuations can follow one cached prefix. Any cache that stores keys and values by
 * position supports it by moving its write position.
 */
export interface TruncatableLM extends CausalLM {
  /**
   * Drops cached positions >= `position`; the next token goes to `position`.
   *
   * @param position New length of the cache, 0..this.position.
   */
  truncate(position: number): void;
}

/**
 * Reports whether `lm` implements {@linkcode TruncatableLM.truncate}.
 *
 * @param lm Any model.
 */
export function canTruncate(lm: CausalLM): lm is TruncatableLM {
  return typeof (lm as Partial<TruncatableLM>).truncate === "function";
}

/** Unit of the acc_norm divisor of text choices; token-id choices always use their token count. */
export type LengthUnit = "bytes" | "chars";

/** Options of {@linkcode evaluateChoiceTasks}. */
export interface ZeroShotOptions {
  /** Prepend the tokenizer's BOS id to every text context. Default false (the harness default). */
  addBos?: boolean;
  /**
   * acc_norm divisor of text choices: "bytes" (UTF-8 bytes, the default) or "chars"
   * (Unicode code points, Python's `len` as the harness uses it). They differ only on
   * non-ASCII text.
   */
  lengthUnit?: LengthUnit;
  /** Reference model scored on the same questions for the paired accuracy difference. */
  ref?: CausalLM;
  /** Progress reporter, advanced by 1 per question per model (total: questions, twice with `ref`). */
  progress?: Progress;
  /** Logit elements per forward call; default {@linkcode MAX_LOGITS_PER_FORWARD}. */
  maxLogitsPerForward?: number;
}

/** Scores of one model. Keys are those of `deno task eval --json`. */
export interface ChoiceModelResult {
  /** Accuracy per task, in order of first appearance. */
  tasks: TaskAccuracy[];
  /** Unweighted mean over tasks. */
  average: AverageAccuracy;
  /** Per-question log-likelihoods and predictions, in input order. */
  samples: ChoiceQuestionScore[];
  /** Token positions fed to the model, shared prefixes counted once per forward call. */
  forwarded_tokens: number;
}

/** Result of {@linkcode evaluateChoiceTasks}. */
export interface ChoiceEvalResult extends ChoiceModelResult {
  /** The reference model's own scores, with `ref`. */
  ref?: ChoiceModelResult;
  /** Model minus reference, paired per question, with `ref`. */
  comparison?: { tasks: TaskDifference[]; average: AverageDifference };
}

/** One choice as token ids: `tokens` = context then continuation, scored from `start`. */
export interface EncodedChoice {
  /** Context and continuation ids, at most maxSeqLen + 1 of them. */
  tokens: number[];
  /** Index in `tokens` of the first continuation token, at least 1. */
  start: number;
}

/**
 * Scores multiple-choice questions with `lm` and, with `options.ref`, with a reference
 * model too. Every question is tokenized and checked before any scoring, so a bad
 * question fails the run at once. The models' KV caches are reset.
 *
 * @example Score parsed task files
 * ```ts ignore
 * const { questions } = await readChoiceTasks(["piqa.jsonl"]);
 * const result = await evaluateChoiceTasks(lm, tokenizer, questions, {});
 * console.log(result.tasks[0].acc, result.tasks[0].acc_norm);
 * ```
 * @param lm Model to evaluate.
 * @param tokenizer Tokenizer for text questions; null for token-id-only models.
 * @param questions Parsed questions ({@linkcode readChoiceTasks}).
 * @param options BOS, length unit, reference model, progress.
 * @returns Accuracies per task and averaged, per-question scores and the comparison.
 * @throws {ChoiceLineError} When a question cannot be tokenized or scored (names file:line).
 * @throws {UsageError} On mismatched vocabularies or an empty question list.
 */
export async function evaluateChoiceTasks(
  lm: CausalLM,
  tokenizer: Tokenizer | null,
  questions: readonly ChoiceQuestion[],
  options: ZeroShotOptions = {},
): Promise<ChoiceEvalResult> {
  const ref = options.ref;
  if (questions.length === 0) throw new UsageError("No questions to evaluate");
  if (ref && ref.config.vocabSize !== lm.config.vocabSize) {
    throw new UsageError(
      `The reference model's vocabulary (${ref.config.vocabSize}) differs from the model's (${lm.config.vocabSize}): the comparison needs the same tokenizer`,
    );
  }
  // both models score the same tokens, so truncate to the shorter context
  const maxSeqLen = Math.min(lm.config.maxSeqLen, ref?.config.maxSeqLen ?? Infinity);
  const encoded = questions.map((q) =>
    encodeQuestion(q, tokenizer, lm.config.vocabSize, maxSeqLen, options.addBos ?? false)
  );
  const lengths = questions.map((q) => normLengths(q, options.lengthUnit ?? "bytes"));

  const result: ChoiceEvalResult = await scoreModel(lm, questions, encoded, lengths, options);
  if (ref) {
    result.ref = await scoreModel(ref, questions, encoded, lengths, options);
    result.comparison = compareChoiceScores(result.samples, result.ref.samples);
  }
  return result;
}

async function scoreModel(
  lm: CausalLM,
  questions: readonly ChoiceQuestion[],
  encoded: readonly EncodedChoice[][],
  lengths: readonly number[][],
  options: ZeroShotOptions,
): Promise<ChoiceModelResult> {
  const counter = { tokens: 0 };
  const samples: ChoiceQuestionScore[] = [];
  for (const [i, q] of questions.entries()) {
    const ll = await scoreChoices(lm, encoded[i], {
      maxLogitsPerForward: options.maxLogitsPerForward,
      counter,
    });
    if (ll.some((x) => !Number.isFinite(x))) {
      throw new ChoiceLineError(
        q.file,
        q.line,
        "",
        `Non-finite log-likelihood (${ll.join(", ")}): the model produced NaN or infinite logits`,
      );
    }
    const { pred, pred_norm } = pickChoices(ll, lengths[i]);
    samples.push({
      task: q.task,
      file: q.file,
      line: q.line,
      answer: q.answer,
      ll,
      norm_length: lengths[i],
      pred,
      pred_norm,
      acc: pred === q.answer ? 1 : 0,
      acc_norm: pred_norm === q.answer ? 1 : 0,
    });
    options.progress?.advance(1);
  }
  return { ...summarizeChoiceScores(samples), samples, forwarded_tokens: counter.tokens };
}

// ---------------------------------------------------------------------------------------
// tokenization

/**
 * Encodes one (context, continuation) pair as lm-evaluation-harness does; see the
 * module documentation.
 *
 * @example The context's trailing space moves to the continuation
 * ```ts
 * import { encodeTextPair } from "./zero_shot.ts";
 * const bytes = { vocabSize: 256, bosId: undefined, eosIds: [0],
 *   encode: (s: string) => [...new TextEncoder().encode(s)], decode: () => "" };
 * const pair = encodeTextPair(bytes, "Q: ", "A", false);
 * if (pair.context.length !== 2 || pair.continuation.join() !== "32,65") throw new Error();
 * ```
 * @param tokenizer Tokenizer.
 * @param context Context text.
 * @param continuation Continuation text.
 * @param addBos Whether `encode` prepends BOS.
 * @returns Context ids (at least one) and continuation ids (possibly empty when the
 *   tokenizer merges the continuation into the context's last token).
 * @throws {UsageError} When the context is empty and the tokenizer has neither BOS nor EOS.
 */
export function encodeTextPair(
  tokenizer: Tokenizer,
  context: string,
  continuation: string,
  addBos: boolean,
): { context: number[]; continuation: number[] } {
  const spaces = context.length - context.trimEnd().length;
  if (spaces > 0) {
    continuation = context.slice(context.length - spaces) + continuation;
    context = context.slice(0, context.length - spaces);
  }
  if (context === "") {
    // nothing to condition on: the harness feeds its prefix token (BOS, else EOS) first
    const ids = tokenizer.encode(continuation, { addBos });
    const prefix = tokenizer.bosId ?? tokenizer.eosIds[0];
    if (prefix === undefined) {
      throw new UsageError(
        "An empty context needs a BOS or EOS token to start from, and the tokenizer has neither",
      );
    }
    return ids[0] === prefix
      ? { context: ids.slice(0, 1), continuation: ids.slice(1) }
      : { context: [prefix], continuation: ids };
  }
  const whole = tokenizer.encode(context + continuation, { addBos });
  const ids = tokenizer.encode(context, { addBos });
  return { context: ids, continuation: whole.slice(ids.length) };
}

/**
 * Encodes and checks every choice of a question, then left-truncates it to
 * maxSeqLen + 1 tokens.
 *
 * @param q Question.
 * @param tokenizer Tokenizer, or null when only token-id questions are allowed.
 * @param vocabSize The model's vocabulary size; every id must be below it.
 * @param maxSeqLen The model's context length.
 * @param addBos Prepend BOS to text contexts.
 * @throws {ChoiceLineError} Naming the question's file:line and the choice.
 */
export function encodeQuestion(
  q: ChoiceQuestion,
  tokenizer: Tokenizer | null,
  vocabSize: number,
  maxSeqLen: number,
  addBos: boolean,
): EncodedChoice[] {
  const fail = (field: string, detail: string) =>
    new ChoiceLineError(q.file, q.line, field, detail);
  return q.requests.map((request, i): EncodedChoice => {
    let pair: { context: number[]; continuation: number[] };
    if (q.kind === "ids") {
      pair = q.requests[i];
    } else if (tokenizer) {
      try {
        pair = encodeTextPair(
          tokenizer,
          request.context as string,
          request.continuation as string,
          addBos,
        );
      } catch (error) {
        if (error instanceof UsageError) throw fail("context", error.message);
        throw error;
      }
    } else {
      throw fail(
        "",
        "Text questions need a tokenizer and the model has none: give context and choices as token-id arrays",
      );
    }

    const field = q.layout === "native" ? `choices[${i}]` : `choice ${i}`;
    if (pair.continuation.length === 0) {
      throw fail(
        field,
        "Encodes to no tokens after the context (the tokenizer merged it into the context); rewrite the choice",
      );
    }
    if (pair.continuation.length > maxSeqLen) {
      throw fail(
        field,
        `Continuation of ${pair.continuation.length} tokens does not fit the model's context of ${maxSeqLen}`,
      );
    }
    const tokens = [...pair.context, ...pair.continuation];
    const bad = tokens.find((id) => !(id >= 0 && id < vocabSize));
    if (bad !== undefined) {
      throw fail(field, `Token id ${bad} is outside the model's vocabulary [0, ${vocabSize})`);
    }

    // keep the last maxSeqLen + 1 tokens: the model reads all but the last
    const drop = Math.max(0, tokens.length - (maxSeqLen + 1));
    return { tokens: tokens.slice(drop), start: pair.context.length - drop };
  });
}

/** The acc_norm divisor of each choice. */
function normLengths(q: ChoiceQuestion, unit: LengthUnit): number[] {
  if (q.kind === "ids") return q.requests.map((r) => r.continuation.length);
  const encoder = new TextEncoder();
  return q.choices.map((c) => (unit === "bytes" ? encoder.encode(c).length : [...c].length));
}

// ---------------------------------------------------------------------------------------
// scoring

/** Options of {@linkcode scoreChoices}. */
export interface ScoreChoicesOptions {
  /** Logit elements per forward call; default {@linkcode MAX_LOGITS_PER_FORWARD}. */
  maxLogitsPerForward?: number;
  /** Adds the number of token positions fed to the model to `tokens`. */
  counter?: { tokens: number };
}

/**
 * Sums, for each choice, log p(tokens[j] | tokens[0..j-1]) over j >= start, running the
 * choices' common prefix once (see the module documentation for the cost without
 * `truncate`). Resets `lm` before and after.
 *
 * @param lm Model.
 * @param choices Encoded choices, each at most maxSeqLen + 1 tokens with start >= 1.
 * @param options Chunk size and token counter.
 * @returns Summed log-likelihood per choice, in nats.
 */
export async function scoreChoices(
  lm: CausalLM,
  choices: readonly EncodedChoice[],
  options: ScoreChoicesOptions = {},
): Promise<number[]> {
  if (choices.length === 0) return [];
  const vocab = lm.config.vocabSize;
  const rowsPerForward = Math.max(
    1,
    Math.floor((options.maxLogitsPerForward ?? MAX_LOGITS_PER_FORWARD) / vocab),
  );
  const counter = options.counter ?? { tokens: 0 };
  const inputs = choices.map((c) => c.tokens.slice(0, -1)); // ids fed to the model; row j predicts tokens[j + 1]
  const shared = commonPrefixLength(inputs);
  const firstRow = Math.min(...choices.map((c) => c.start - 1));
  const logP = new Float64Array(vocab); // [vocab] log-probabilities of one row

  // shared prefix: rows before its last predict the same next token for every choice, so
  // one number per row is kept; the last row predicts each choice's own token
  const prefixLogP = new Float64Array(shared); // [shared] log p(inputs[0][j + 1] | row j), j < shared - 1
  let lastRow = new Float64Array(0); // [vocab] log-probabilities of row shared - 1
  lm.reset();
  await feed(
    lm,
    inputs[0].slice(0, shared),
    firstRow,
    rowsPerForward,
    counter,
    (row, logits, offset) => {
      logSoftmax(logits, offset, vocab, logP);
      if (row < shared - 1) prefixLogP[row] = logP[inputs[0][row + 1]];
      else lastRow = logP.slice();
    },
  );

  const sums: number[] = [];
  for (const [i, choice] of choices.entries()) {
    if (i > 0) await rewind(lm, inputs[i], shared, counter);
    let sum = 0;
    for (let row = choice.start - 1; row < shared; row++) {
      sum += row < shared - 1 ? prefixLogP[row] : lastRow[choice.tokens[shared]];
    }
    await feed(
      lm,
      inputs[i].slice(shared),
      choice.start - 1,
      rowsPerForward,
      counter,
      (row, logits, offset) => {
        logSoftmax(logits, offset, vocab, logP);
        sum += logP[choice.tokens[row + 1]];
      },
    );
    sums.push(sum);
  }
  lm.reset();
  return sums;
}

/**
 * Feeds `tokens` at lm.position onward and calls `onRow` for every row at or after
 * `firstRow`. Rows before it are run with `lastOnly`, so their logits are not read back.
 */
async function feed(
  lm: CausalLM,
  tokens: readonly number[],
  firstRow: number,
  rowsPerForward: number,
  counter: { tokens: number },
  onRow: (row: number, logits: Float32Array, offset: number) => void,
): Promise<void> {
  const start = lm.position;
  const skip = Math.min(tokens.length, Math.max(0, firstRow - start));
  if (skip > 0) await lm.forward(tokens.slice(0, skip), { lastOnly: true });
  for (let c = skip; c < tokens.length; c += rowsPerForward) {
    const chunk = tokens.slice(c, Math.min(c + rowsPerForward, tokens.length));
    const logits = await lm.forward(chunk); // [chunk.length, vocab]
    for (let r = 0; r < chunk.length; r++) onRow(start + c + r, logits, r * lm.config.vocabSize);
  }
  counter.tokens += tokens.length;
}

/** Brings the cache back to the first `shared` tokens of `input`. */
async function rewind(
  lm: CausalLM,
  input: readonly number[],
  shared: number,
  counter: { tokens: number },
): Promise<void> {
  if (canTruncate(lm)) {
    lm.truncate(shared);
    return;
  }
  lm.reset();
  if (shared > 0) {
    await lm.forward(input.slice(0, shared), { lastOnly: true });
    counter.tokens += shared;
  }
}

/** Length of the longest prefix common to all `sequences`. */
function commonPrefixLength(sequences: readonly (readonly number[])[]): number {
  let n = Math.min(...sequences.map((s) => s.length));
  for (const s of sequences) {
    let k = 0;
    while (k < n && s[k] === sequences[0][k]) k++;
    n = k;
  }
  return n;
}
