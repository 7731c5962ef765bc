import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { randomWeights, tinyConfig } from "./_helpers.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { readAllWeights } from "../src/model/model.ts";
import { tensorNames } from "../src/model/config.ts";
import type { CausalLM, ForwardOptions } from "../src/model/causal_lm.ts";
import type { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import {
  ChoiceLineError,
  type ChoiceQuestion,
  parseChoiceTasks,
  readChoiceTasks,
} from "../src/data/choice_tasks.ts";
import {
  canTruncate,
  encodeQuestion,
  encodeTextPair,
  evaluateChoiceTasks,
  scoreChoices,
  type TruncatableLM,
} from "../src/eval/zero_shot.ts";
import {
  compareChoiceScores,
  meanStderr,
  pickChoices,
  summarizeChoiceScores,
} from "../src/eval/choice_metrics.ts";
import type { ChoiceQuestionScore } from "../src/eval/choice_metrics.ts";

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

// ---------------------------------------------------------------------------------------
// test models and tokenizers

/** The planted successor of token t in tests/fixtures/choice_ids.jsonl: a permutation of 0..15. */
const plantedNext = (t: number) => (5 * t + 3) % 16;

/**
 * Builds a 16-token model whose next-token distribution strongly prefers next(t) after
 * token t. Embeddings are one-hot and the output head maps each token's direction to its
 * successor's row. Block weights are random and scaled down, so the context still moves
 * the logits a little.
 */
async function plantedBigramModel(
  next: (t: number) => number = plantedNext,
): Promise<ReferenceModel> {
  const config = tinyConfig({ vocabSize: 16 });
  const weights = await readAllWeights(randomWeights(config, 7));
  for (const [name, w] of weights) {
    if (name.startsWith("model.layers.") && name.endsWith("proj.weight")) {
      w.forEach((x, i) => (w[i] = 0.3 * x));
    }
  }
  const embed = weights.get(tensorNames.embed)!; // [16, dim]
  const head = weights.get(tensorNames.lmHead)!; // [16, dim]
  embed.fill(0);
  head.fill(0);
  for (let t = 0; t < 16; t++) {
    embed[t * config.dim + t] = 1;
    head[next(t) * config.dim + t] = 6;
  }
  return await ReferenceModel.create(config, weights);
}

/** UTF-8 bytes as token ids, with BOS = 256. */
const byteTokenizer: Tokenizer = {
  vocabSize: 257,
  bosId: 256,
  eosIds: [],
  encode: (text, options) => [...(options?.addBos ? [256] : []), ...new TextEncoder().encode(text)],
  decode: (ids) => new TextDecoder().decode(new Uint8Array(ids.filter((id) => id < 256))),
};

/** Greedy longest match over a fixed vocabulary, so that tokens can span a word boundary. */
function vocabularyTokenizer(pieces: string[]): Tokenizer {
  return {
    vocabSize: pieces.length,
    bosId: undefined,
    eosIds: [0],
    encode: (text) => {
      const ids: number[] = [];
      for (let i = 0; i < text.length;) {
        let best = -1;
        pieces.forEach((p, id) => {
          if (text.startsWith(p, i) && (best < 0 || p.length > pieces[best].length)) best = id;
        });
        if (best < 0) throw new Error(`No piece for ${JSON.stringify(text.slice(i))}`);
        ids.push(best);
        i += pieces[best].length;
      }
      return ids;
    },
    decode: (ids) => ids.map((id) => pieces[id]).join(""),
  };
}

/** Wraps a model to count forward calls and tokens; `truncate` replays the kept tokens. */
class CountingModel implements CausalLM {
  forwardCalls = 0;
  forwardTokens = 0;
  history: number[] = [];
  constructor(readonly inner: CausalLM) {}
  get config() {
    return this.inner.config;
  }
  get position() {
    return this.inner.position;
  }
  reset() {
    this.inner.reset();
    this.history = [];
  }
  forward(tokens: ArrayLike<number>, options?: ForwardOptions) {
    this.forwardCalls++;
    this.forwardTokens += tokens.length;
    this.history.push(...Array.from(tokens));
    return this.inner.forward(tokens, options);
  }
  dispose() {}
}

/** A counting reference model that can also cut its cache back, by replaying outside the counts. */
class TruncatingModel extends CountingModel implements TruncatableLM {
  constructor(readonly reference: ReferenceModel) {
    super(reference);
  }
  truncate(position: number) {
    const keptTokens = this.history.slice(0, position);
    this.reference.reset();
    this.history = keptTokens;
    for (const token of keptTokens) this.reference.step(token);
  }
}

// ---------------------------------------------------------------------------------------
// an independent log-likelihood: step the reference model token by token from an empty cache

function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (const x of row) max = Math.max(max, x);
  let sum = 0;
  for (const x of row) sum += Math.exp(x - max);
  return max + Math.log(sum);
}

/** Sum of log p(continuation[k] | context, continuation[..k]) computed without any sharing. */
function independentLogLikelihood(
  model: ReferenceModel,
  context: readonly number[],
  continuation: readonly number[],
): number {
  const sequence = [...context, ...continuation];
  model.reset();
  let sum = 0;
  for (let j = 0; j + 1 < sequence.length; j++) {
    const logits = model.step(sequence[j]);
    if (j + 1 >= context.length) sum += logits[sequence[j + 1]] - logSumExp(logits);
  }
  model.reset();
  return sum;
}

const close = (actual: number, expected: number, label: string) =>
  assert.ok(
    Math.abs(actual - expected) <= 1e-9 * Math.max(1, Math.abs(expected)),
    `${label}: ${actual} vs ${expected}`,
  );

// ---------------------------------------------------------------------------------------
// scoring against planted weights and the independent computation

Deno.test("evaluateChoiceTasks gets planted token-id questions right", async () => {
  const model = await plantedBigramModel();
  const { questions } = await readChoiceTasks([fixture("choice_ids.jsonl")]);
  const result = await evaluateChoiceTasks(model, null, questions);

  assert.deepEqual(result.samples.map((s) => s.pred), questions.map((q) => q.answer));
  assert.deepEqual(result.samples.map((s) => s.pred_norm), questions.map((q) => q.answer));
  assert.deepEqual(result.tasks.map((t) => [t.task, t.questions, t.acc, t.acc_norm]), [
    ["bigram", 3, 1, 1],
    ["choice_ids", 3, 1, 1],
  ]);
  assert.equal(result.average.acc, 1);
  assert.equal(result.average.questions, 6);
  assert.equal(result.tasks[0].acc_stderr, 0);

  // every choice's sum equals a token-by-token computation without prefix sharing
  for (const [i, q] of questions.entries()) {
    assert.equal(q.kind, "ids");
    for (const [c, request] of q.requests.entries()) {
      const expected = independentLogLikelihood(
        model,
        request.context as number[],
        request.continuation as number[],
      );
      close(result.samples[i].ll[c], expected, `line ${q.line} choice ${c}`);
    }
    // token-id choices normalise by their token count
    assert.deepEqual(result.samples[i].norm_length, q.requests.map((r) => r.continuation.length));
  }
});

Deno.test("evaluateChoiceTasks matches independent sums on text layouts", async () => {
  const config = tinyConfig({ vocabSize: 257, maxSeqLen: 256 });
  const model = await ReferenceModel.create(config, randomWeights(config, 3));
  const files = [
    "choice_piqa.jsonl",
    "choice_arc.jsonl",
    "choice_hellaswag.jsonl",
    "choice_winogrande.jsonl",
    "choice_native.jsonl",
  ]
    .map(fixture);
  const { questions } = await readChoiceTasks(files);
  const result = await evaluateChoiceTasks(model, byteTokenizer, questions, { addBos: true });

  assert.deepEqual(result.tasks.map((t) => [t.task, t.questions]), [
    ["choice_piqa", 3],
    ["choice_arc", 4],
    ["choice_hellaswag", 3],
    ["choice_winogrande", 2],
    ["facts", 2],
    ["choice_native", 1],
  ]);
  const encoder = new TextEncoder();
  for (const [i, q] of questions.entries()) {
    assert.equal(q.kind, "text");
    if (q.kind !== "text") continue;
    for (const [c, request] of q.requests.entries()) {
      // Bytes are a concatenative tokenization, so context and continuation encode apart.
      // The context's trailing whitespace is scored with the continuation (a HellaSwag
      // context ends with a space). An empty context starts from BOS alone.
      const trimmed = request.context.trimEnd();
      const context = [256, ...encoder.encode(trimmed)];
      const continuation = [
        ...encoder.encode(request.context.slice(trimmed.length) + request.continuation),
      ];
      const expected = independentLogLikelihood(model, context, continuation);
      close(result.samples[i].ll[c], expected, `${q.file}:${q.line} choice ${c}`);
    }
    assert.deepEqual(result.samples[i].norm_length, q.choices.map((s) => encoder.encode(s).length));
    const { pred, pred_norm } = pickChoices(result.samples[i].ll, result.samples[i].norm_length);
    assert.equal(result.samples[i].acc, pred === q.answer ? 1 : 0);
    assert.equal(result.samples[i].acc_norm, pred_norm === q.answer ? 1 : 0);
  }
});

Deno.test("scoreChoices shares the prefix with and without truncate", async () => {
  const model = await plantedBigramModel();
  const { questions } = await readChoiceTasks([fixture("choice_ids.jsonl")]);
  const plain = new CountingModel(model);
  const truncating = new TruncatingModel(model);
  assert.equal(canTruncate(plain), false);
  assert.equal(canTruncate(truncating), true);

  // line 4: context [9], choices [0,3,7], [0,3,2], [0,5]; the inputs share [9, 0]
  const encoded = encodeQuestion(questions[3], null, 16, 64, false);
  const withoutTruncate = await scoreChoices(plain, encoded);
  const withTruncate = await scoreChoices(truncating, encoded);
  assert.deepEqual(withTruncate, withoutTruncate);
  // inputs have 3, 3 and 2 tokens: 2 shared, then 1 + 1 + 0 own tokens
  assert.equal(truncating.forwardTokens, 2 + 1 + 1);
  // without truncate the 2 shared tokens are re-fed for the second and third choice
  assert.equal(plain.forwardTokens, 2 + 1 + 1 + 2 * 2);
  assert.equal(model.position, 0);

  // the counter reported by evaluateChoiceTasks agrees with the wrapper's count
  const counted = new TruncatingModel(model);
  const result = await evaluateChoiceTasks(counted, null, questions);
  assert.equal(result.forwarded_tokens, counted.forwardTokens);
});

Deno.test("scoreChoices reads logits in chunks without changing sums", async () => {
  const model = await plantedBigramModel();
  const { questions } = await readChoiceTasks([fixture("choice_ids.jsonl")]);
  const encoded = encodeQuestion(questions[5], null, 16, 64, false);
  const whole = await scoreChoices(model, encoded);
  // 16 logits = one row per forward call
  const counting = new CountingModel(model);
  const chunked = await scoreChoices(counting, encoded, { maxLogitsPerForward: 16 });
  assert.deepEqual(chunked, whole);
  assert.ok(counting.forwardCalls > encoded.length + 1, `${counting.forwardCalls} forward calls`);
});

Deno.test("encodeQuestion left-truncates to the context length", async () => {
  const model = await plantedBigramModel();
  const [q] = parseChoiceTasks(
    '{"context": [10, 5, 12, 15, 14], "choices": [[9, 0], [3]], "answer": 0}',
    "t.jsonl",
  ).questions;
  const encoded = encodeQuestion(q, null, 16, 4, false);
  // at most maxSeqLen + 1 = 5 tokens, the continuation whole
  assert.deepEqual(encoded, [
    { tokens: [12, 15, 14, 9, 0], start: 3 },
    { tokens: [5, 12, 15, 14, 3], start: 4 },
  ]);
  const [first, second] = await scoreChoices(model, encoded);
  close(first, independentLogLikelihood(model, [12, 15, 14], [9, 0]), "choice 0");
  close(second, independentLogLikelihood(model, [5, 12, 15, 14], [3]), "choice 1");
});

// ---------------------------------------------------------------------------------------
// tokenization conventions

Deno.test("encodeTextPair follows the harness's pair encoding", () => {
  const tokenizer = vocabularyTokenizer(["</s>", "Q", ":", " ", " A", "a", "b", "a b", "x"]);
  // the context's trailing space joins the continuation, where " A" is one token
  assert.deepEqual(encodeTextPair(tokenizer, "Q: ", "A", false), {
    context: [1, 2],
    continuation: [4],
  });
  // the continuation is the whole encoding after the context's token count
  assert.deepEqual(encodeTextPair(tokenizer, "x", " a", false), {
    context: [8],
    continuation: [3, 5],
  });
  // "a b" merges across the boundary, so nothing is left for the continuation
  assert.deepEqual(encodeTextPair(tokenizer, "a", " b", false), { context: [5], continuation: [] });
  // an empty context starts from the prefix token (EOS here, for want of BOS)
  assert.deepEqual(encodeTextPair(tokenizer, "", "ab", false), {
    context: [0],
    continuation: [5, 6],
  });
  assert.deepEqual(encodeTextPair(byteTokenizer, "", "a", true), {
    context: [256],
    continuation: [97],
  });
});

Deno.test("encodeQuestion names the line of a bad question", () => {
  const tokenizer = vocabularyTokenizer(["</s>", "a", "b", " ", "a b"]);
  const { questions } = parseChoiceTasks(
    '\n{"context": "a", "choices": ["b", "a"], "answer": 0}',
    "merge.jsonl",
  );
  assert.throws(() => encodeQuestion(questions[0], tokenizer, 5, 64, false), (e: unknown) => {
    assert.ok(e instanceof ChoiceLineError);
    assert.equal(
      e.message,
      "merge.jsonl:2: choices[0]: Encodes to no tokens after the context (the tokenizer merged it into the context); rewrite the choice",
    );
    return true;
  });
  const ids = parseChoiceTasks('{"context": [1], "choices": [[2], [16]], "answer": 0}', "ids.jsonl")
    .questions[0];
  assert.throws(
    () => encodeQuestion(ids, null, 16, 64, false),
    /ids.jsonl:1: choices\[1\]: Token id 16 is outside the model's vocabulary \[0, 16\)/,
  );
  const long =
    parseChoiceTasks('{"context": [1], "choices": [[2, 3, 4], [5]], "answer": 0}', "long.jsonl")
      .questions[0];
  assert.throws(
    () => encodeQuestion(long, null, 16, 2, false),
    /long.jsonl:1: choices\[0\]: Continuation of 3 tokens/,
  );
});

Deno.test("evaluateChoiceTasks checks every question before scoring", async () => {
  const model = new CountingModel(await plantedBigramModel());
  const text = [
    '{"context": [1], "choices": [[8], [2]], "answer": 0}',
    '{"context": [2], "choices": [[13], [99]], "answer": 0}',
  ].join("\n");
  const { questions } = parseChoiceTasks(text, "late.jsonl");
  await assert.rejects(
    evaluateChoiceTasks(model, null, questions),
    /late.jsonl:2: choices\[1\]: Token id 99/,
  );
  assert.equal(model.forwardCalls, 0);

  const { questions: textQuestions } = await readChoiceTasks([fixture("choice_piqa.jsonl")]);
  await assert.rejects(
    evaluateChoiceTasks(model, null, textQuestions),
    /choice_piqa.jsonl:1: Text questions need a tokenizer/,
  );
  assert.equal(model.forwardCalls, 0);
});

// ---------------------------------------------------------------------------------------
// metrics and the reference comparison

function score(task: string, line: number, acc: number, accNorm: number): ChoiceQuestionScore {
  return {
    task,
    file: "f",
    line,
    answer: 0,
    ll: [],
    norm_length: [],
    pred: 0,
    pred_norm: 0,
    acc,
    acc_norm: accNorm,
  };
}

Deno.test("summarizeChoiceScores computes the harness's standard errors", () => {
  const scores = [
    score("a", 1, 1, 1),
    score("a", 2, 1, 0),
    score("a", 3, 0, 0),
    score("a", 4, 1, 1),
    score("b", 5, 0, 1),
    score("b", 6, 1, 1),
  ];
  const { tasks, average } = summarizeChoiceScores(scores);
  assert.equal(tasks[0].acc, 0.75);
  close(tasks[0].acc_stderr, Math.sqrt(0.75 * 0.25 / 3), "a acc_stderr");
  assert.equal(tasks[0].acc_norm, 0.5);
  close(tasks[0].acc_norm_stderr, Math.sqrt(0.5 * 0.5 / 3), "a acc_norm_stderr");
  assert.equal(tasks[1].acc, 0.5);
  close(tasks[1].acc_stderr, Math.sqrt(0.5 * 0.5 / 1), "b acc_stderr");
  assert.equal(tasks[1].acc_norm_stderr, 0);
  // unweighted over tasks
  assert.equal(average.acc, (0.75 + 0.5) / 2);
  close(average.acc_stderr, Math.sqrt(0.75 * 0.25 / 3 + 0.25) / 2, "average acc_stderr");
  assert.equal(average.questions, 6);
  assert.ok(Number.isNaN(meanStderr([1]).stderr));
});

Deno.test("pickChoices takes the first of tied choices", () => {
  assert.deepEqual(pickChoices([-2, -2, -3], [1, 1, 1]), { pred: 0, pred_norm: 0 });
  assert.deepEqual(pickChoices([-3, -2, -2], [3, 1, 2]), { pred: 1, pred_norm: 0 });
});

Deno.test("evaluateChoiceTasks reports the paired difference to a reference", async () => {
  const ref = await plantedBigramModel();
  // the damaged model sends 6 and 8 to each other's successor (1 and 11)
  const swapped = new Map([[6, 11], [8, 1]]);
  const damaged = await plantedBigramModel((t) => swapped.get(t) ?? plantedNext(t));
  const { questions } = await readChoiceTasks([fixture("choice_ids.jsonl")]);
  const result = await evaluateChoiceTasks(damaged, null, questions, { ref });

  assert.ok(result.ref);
  assert.ok(result.comparison);
  assert.deepEqual(result.ref.tasks.map((t) => t.acc), [1, 1]);
  const modelAcc = result.samples.map((s) => s.acc);
  // lines 2 and 3 follow 8 -> 11 and 6 -> 1 -> 8 -> 11; the other lines avoid 6 and 8
  assert.deepEqual(modelAcc, [1, 0, 0, 1, 1, 1]);
  const [bigram, rest] = result.comparison.tasks;
  assert.equal(bigram.acc_diff, -2 / 3);
  close(bigram.acc_diff_stderr, meanStderr([0, -1, -1]).stderr, "paired stderr");
  close(
    bigram.acc_diff_stderr,
    Math.sqrt((2 * (1 / 3) ** 2 + (2 / 3) ** 2) / 2 / 3),
    "paired stderr by hand",
  );
  assert.equal(bigram.ref_only_correct, 2);
  assert.equal(bigram.model_only_correct, 0);
  assert.equal(bigram.ref_acc, 1);
  assert.equal(rest.acc_diff, 0);
  assert.equal(result.comparison.average.acc_diff, -1 / 3);
  assert.deepEqual(compareChoiceScores(result.samples, result.ref.samples), result.comparison);
});

Deno.test("compareChoiceScores rejects different questions", () => {
  assert.throws(
    () => compareChoiceScores([score("a", 1, 1, 1)], [score("a", 2, 1, 1)]),
    /same questions/,
  );
});

Deno.test("evaluateChoiceTasks uses character lengths on request", async () => {
  const config = tinyConfig({ vocabSize: 257, maxSeqLen: 64 });
  const model = await ReferenceModel.create(config, randomWeights(config, 4));
  const q: ChoiceQuestion =
    parseChoiceTasks('{"context": "Café", "choices": ["crème", "tea"], "answer": 0}', "u.jsonl")
      .questions[0];
  const bytes = await evaluateChoiceTasks(model, byteTokenizer, [q]);
  const chars = await evaluateChoiceTasks(model, byteTokenizer, [q], { lengthUnit: "chars" });
  assert.deepEqual(bytes.samples[0].norm_length, [6, 3]);
  assert.deepEqual(chars.samples[0].norm_length, [5, 3]);
  assert.deepEqual(chars.samples[0].ll, bytes.samples[0].ll);
});
