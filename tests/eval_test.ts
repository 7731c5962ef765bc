import assert from "node:assert/strict";
import { logSoftmax } from "../src/eval/log_softmax.ts";
import { NllStats, standardError, windowPerplexity } from "../src/eval/perplexity.ts";
import { klDivergence, KldStats, percentile } from "../src/eval/kl_divergence.ts";
import { evaluate, splitWindows } from "../src/eval/evaluate.ts";
import type { CausalLM, ForwardOptions } from "../src/model/causal_lm.ts";
import type { ModelConfig } from "../src/model/config.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { sampleTokenStream } from "../src/data/sample_stream.ts";
import { UsageError } from "../src/errors.ts";
import { GpuContext } from "../src/gpu/device.ts";
import { createCausalLM } from "../src/eval/engine.ts";
import { STORIES_260K, tinyConfig } from "./_helpers.ts";

/**
 * A two-token model with planted logits: at position p the logits are [0, p * ln 2], so
 * p(token 1) = 2^p / (1 + 2^p). A `bias` row is added to every output. It records the
 * position of each forward call, so tests can check that windows restart at 0.
 */
class PlantedLM implements CausalLM {
  readonly config: ModelConfig;
  position = 0;
  calls: { position: number; length: number }[] = [];
  #bias: [number, number];

  /**
   * @param maxSeqLen Context length.
   * @param bias Added to the two logits of every row.
   * @param vocabSize Vocabulary size the config declares (only a mismatch test changes it).
   */
  constructor(maxSeqLen: number, bias: [number, number] = [0, 0], vocabSize = 2) {
    this.config = tinyConfig({ vocabSize, maxSeqLen });
    this.#bias = bias;
  }

  reset(): void {
    this.position = 0;
  }

  forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): Promise<Float32Array> {
    assert.ok(this.position + tokens.length <= this.config.maxSeqLen, "forward past the context");
    assert.ok(!options.lastOnly);
    this.calls.push({ position: this.position, length: tokens.length });
    const out = new Float32Array(2 * tokens.length); // [T, 2]
    for (let t = 0; t < tokens.length; t++) {
      out[2 * t] = this.#bias[0];
      out[2 * t + 1] = (this.position + t) * Math.LN2 + this.#bias[1];
    }
    this.position += tokens.length;
    return Promise.resolve(out);
  }

  dispose(): void {}
}

function assertClose(actual: number, expected: number, tolerance: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `${what}: expected ${expected}, got ${actual}`,
  );
}

Deno.test("logSoftmax matches hand-computed values", () => {
  const out = new Float64Array(3);
  const top = logSoftmax(new Float32Array([9, 1, 2, 3]), 1, 3, out);
  // log(e^1 + e^2 + e^3) = 3 + log(1 + e^-1 + e^-2) = 3.40760596444438
  const logSum = 3.40760596444438;
  assertClose(out[0], 1 - logSum, 1e-13, "log p[0]");
  assertClose(out[1], 2 - logSum, 1e-13, "log p[1]");
  assertClose(out[2], 3 - logSum, 1e-13, "log p[2]");
  assert.equal(top, 2);
});

Deno.test("logSoftmax stays finite for large logits", () => {
  const out = new Float64Array(2);
  const top = logSoftmax(new Float32Array([1e30, 1e30]), 0, 2, out);
  assertClose(out[0], Math.log(0.5), 1e-15, "log p[0]");
  assertClose(out[1], Math.log(0.5), 1e-15, "log p[1]");
  assert.equal(top, 0, "ties resolve to the lowest index");
});

Deno.test("windowPerplexity matches a hand computation", () => {
  // row 0 uniform over 4 ids: p(target 2) = 1/4; row 1 [ln 3, 0, 0, 0]: p(target 0) = 3/6
  const logits = new Float32Array([0, 0, 0, 0, Math.log(3), 0, 0, 0]);
  const ppl = windowPerplexity(logits, [1, 2, 0], 4);
  assertClose(ppl, Math.sqrt(8), 1e-6, "ppl = exp(-(ln 1/4 + ln 1/2) / 2)");
});

Deno.test("windowPerplexity rejects a one-token window", () => {
  assert.throws(() => windowPerplexity(new Float32Array(4), [1], 4), /at least 2 tokens/);
});

Deno.test("NllStats mean and standard error", () => {
  const stats = new NllStats();
  for (const v of [1, 2, 3]) stats.add(v);
  assert.equal(stats.count, 3);
  assertClose(stats.mean, 2, 1e-15, "mean");
  // population variance 2/3, so the standard error is sqrt((2/3) / 2)
  assertClose(stats.stderr, Math.sqrt(1 / 3), 1e-15, "stderr");
  assertClose(stats.perplexity, Math.exp(2), 1e-12, "ppl");
  assert.equal(standardError(5, 25, 1), 0);
});

Deno.test("klDivergence matches a hand computation", () => {
  const ref = Float64Array.from([0.5, 0.5], Math.log);
  const model = Float64Array.from([0.25, 0.75], Math.log);
  // 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75) = 0.5 ln(4/3)
  assertClose(klDivergence(ref, model), 0.5 * Math.log(4 / 3), 1e-15, "KL");
  assert.equal(klDivergence(model, model), 0);
});

Deno.test("klDivergence skips zero reference probabilities", () => {
  const ref = new Float64Array([0, -Infinity]); // p = [1, 0]
  const model = Float64Array.from([0.5, 0.5], Math.log);
  assertClose(klDivergence(ref, model), Math.log(2), 1e-15, "KL");
});

Deno.test("percentile interpolates between ranks", () => {
  const values = Float64Array.from({ length: 100 }, (_, i) => i);
  assertClose(percentile(values, 0.99), 98.01, 1e-12, "p99 of 0..99");
  assert.equal(percentile(values, 0.5), 49.5);
  assert.equal(percentile(values, 0), 0);
  assert.equal(percentile(values, 1), 99);
  assert.equal(percentile([7], 0.99), 7);
});

Deno.test("KldStats summarises per-token values", () => {
  const stats = new KldStats();
  stats.add(0.3, true);
  stats.add(0.1, false);
  stats.add(0.2, true);
  stats.add(0.0, true);
  assertClose(stats.mean, 0.15, 1e-15, "mean");
  assertClose(stats.percentile(0.5), 0.15, 1e-15, "median of 0, 0.1, 0.2, 0.3");
  assertClose(stats.percentile(0.99), 0.2 + 0.97 * 0.1, 1e-15, "p99 at rank 2.97");
  assert.equal(stats.top1Agreement, 0.75);
  assertClose(stats.top1Stderr, Math.sqrt((0.75 * 0.25) / 3), 1e-15, "top-1 stderr");
});

Deno.test("splitWindows drops windows under 2 tokens", () => {
  // document lengths   ctx   expected window lengths
  const cases: [number[], number, number[]][] = [
    [[10], 4, [4, 4, 2]],
    [[9], 4, [4, 4]],
    [[8], 4, [4, 4]],
    [[1], 4, []],
    [[5, 3], 4, [4, 3]],
    [[3], 2, [2]],
  ];
  for (const [lengths, ctx, expected] of cases) {
    assert.deepEqual(
      splitWindows(lengths, ctx).map((w) => w.length),
      expected,
      `${lengths} in windows of ${ctx}`,
    );
  }
});

Deno.test("evaluate scores planted logits per window", async () => {
  const lm = new PlantedLM(8);
  // windows [0,1,1] [0,1,1] and a dropped [0]; targets are 1 at positions 1 and 2 of each
  const result = await evaluate(lm, new Int32Array([0, 1, 1, 0, 1, 1, 0]), { ctx: 3 });
  // p(1) is 1/2 at position 0 and 2/3 at position 1: nll = -(ln 1/2 + ln 2/3) / 2
  const nll = -(Math.log(1 / 2) + Math.log(2 / 3)) / 2;
  assertClose(result.nll, nll, 1e-7, "nll");
  assertClose(result.ppl, Math.sqrt(3), 1e-6, "ppl");
  assert.equal(result.tokens, 4);
  assert.equal(result.windows, 2);
  assert.equal(result.ctx, 3);
  assert.equal(result.kld_mean, undefined);
  assert.deepEqual(
    lm.calls,
    [{ position: 0, length: 2 }, { position: 0, length: 2 }],
    "each window restarts at 0 and skips its last token",
  );
});

Deno.test("evaluate keeps documents apart", async () => {
  const lm = new PlantedLM(8);
  const result = await evaluate(lm, [new Int32Array([0, 1, 1]), new Int32Array([0, 1])], {
    ctx: 8,
  });
  assert.equal(result.windows, 2);
  assert.equal(result.tokens, 3);
  assert.deepEqual(lm.calls.map((c) => c.position), [0, 0]);
});

Deno.test("evaluate gives the same result in chunks", async () => {
  const tokens = new Int32Array([0, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1]);
  const whole = await evaluate(new PlantedLM(16), tokens, {
    ctx: 6,
    ref: new PlantedLM(16, [1, 0]),
  });
  const chunked = new PlantedLM(16);
  const parts = await evaluate(chunked, tokens, {
    ctx: 6,
    ref: new PlantedLM(16, [1, 0]),
    maxLogitsPerForward: 4,
  });
  assert.deepEqual(parts, whole);
  assert.deepEqual(
    chunked.calls.map((c) => c.length),
    [2, 2, 1, 2, 2],
    "windows of 6 and 5 fed as 5 and 4 tokens in chunks of 2",
  );
});

Deno.test("evaluate measures KL against a planted reference", async () => {
  // The reference adds ln 3 to token 1's logit. At position 0 it gives [1/4, 3/4] and the
  // model [1/2, 1/2], whose argmax is 0 by the lowest-index tie-break. At position 1 it
  // gives [1/7, 6/7] and the model [1/3, 2/3], both with argmax 1.
  const ref = new PlantedLM(4, [0, Math.log(3)]);
  const result = await evaluate(new PlantedLM(4), new Int32Array([0, 1, 1, 0, 1, 0]), {
    ctx: 3,
    ref,
  });
  const kl0 = 0.25 * Math.log(0.25 / 0.5) + 0.75 * Math.log(0.75 / 0.5);
  const kl1 = (1 / 7) * Math.log((1 / 7) / (1 / 3)) + (6 / 7) * Math.log((6 / 7) / (2 / 3));
  assert.equal(result.tokens, 4);
  assertClose(result.kld_mean!, (kl0 + kl1) / 2, 1e-7, "kld_mean");
  assertClose(result.kld_median!, (kl0 + kl1) / 2, 1e-7, "kld_median of two kl0 and two kl1");
  assertClose(result.kld_p99!, Math.max(kl0, kl1), 1e-7, "kld_p99");
  assert.equal(result.top1_agreement, 0.5);
  // reference probabilities of the targets 1, 1, 1, 0 are 3/4, 6/7, 3/4, 1/7
  const refNll = -(2 * Math.log(3 / 4) + Math.log(6 / 7) + Math.log(1 / 7)) / 4;
  assertClose(result.ref_ppl!, Math.exp(refNll), 1e-6, "ref_ppl");
});

Deno.test("evaluate rejects bad windows and ids", async () => {
  const lm = new PlantedLM(8);
  const tokens = new Int32Array([0, 1, 1]);
  await assert.rejects(
    evaluate(lm, tokens, { ctx: 9 }),
    (err: Error) => err instanceof UsageError && /--ctx 9.*context of 8/.test(err.message),
  );
  await assert.rejects(
    evaluate(lm, tokens, { ctx: 1 }),
    (err: Error) => err instanceof UsageError && /--ctx 1.*at least 2/.test(err.message),
  );
  await assert.rejects(evaluate(lm, tokens, { ctx: 2.5 }), UsageError);
  await assert.rejects(
    evaluate(lm, new Int32Array([0, 2]), { ctx: 2 }),
    /Token id 2 at index 1 of document 0 is outside/,
  );
  await assert.rejects(
    evaluate(lm, new Int32Array([1]), { ctx: 2 }),
    /No window of at least 2 tokens/,
  );
  const otherVocab = new PlantedLM(8, [0, 0], 3);
  await assert.rejects(
    evaluate(lm, tokens, { ctx: 2, ref: otherVocab }),
    /vocabulary \(3\) differs/,
  );
});

Deno.test("evaluate rejects NaN logits", async () => {
  const tokens = new Int32Array([0, 1, 1]);
  await assert.rejects(
    evaluate(new PlantedLM(4, [NaN, 0]), tokens, { ctx: 3 }),
    /Non-finite log-likelihood NaN in window 0 at position 0: the model produced/,
  );
  await assert.rejects(
    evaluate(new PlantedLM(4), tokens, { ctx: 3, ref: new PlantedLM(4, [0, NaN]) }),
    /the reference model produced NaN/,
  );
});

Deno.test("evaluate of stories260K against itself has zero KL", async () => {
  const model = await loadLlama2c(STORIES_260K);
  const lm = await ReferenceModel.create(model.config, model.weights);
  const ref = await ReferenceModel.create(model.config, model.weights);
  model.weights.close();
  const tokens = await sampleTokenStream(lm, { tokens: 384, windowLength: 128, seed: 3 });
  const result = await evaluate(lm, tokens, { ctx: 128, ref });
  assert.equal(result.tokens, 3 * 127);
  assert.ok(Math.abs(result.kld_mean!) <= 1e-6, `kld_mean ${result.kld_mean}`);
  assert.ok(Math.abs(result.kld_p99!) <= 1e-6, `kld_p99 ${result.kld_p99}`);
  assert.equal(result.top1_agreement, 1);
  assert.equal(result.ref_ppl, result.ppl);
  // a model sampled at temperature 1 is far better than uniform over 512 ids on its own text
  assert.ok(result.ppl > 1, `ppl ${result.ppl}`);
  assert.ok(result.ppl < 100, `ppl ${result.ppl}`);
});

Deno.test("evaluate of the gpu engine matches the reference", async () => {
  const model = await loadLlama2c(STORIES_260K);
  const gpu = await GpuContext.create();
  try {
    const ref = await createCausalLM(model, "reference");
    const lm = await createCausalLM(model, "gpu", { gpu, contextLength: 96 });
    const tokens = await sampleTokenStream(ref, { tokens: 288, windowLength: 96, seed: 5 });
    const onGpu = await evaluate(lm, tokens, { ctx: 96, ref });
    const onCpu = await evaluate(ref, tokens, { ctx: 96 });
    lm.dispose();

    // f32 GPU logits differ from the f64-accumulated reference by rounding only
    assert.equal(onGpu.tokens, 3 * 95);
    assertClose(onGpu.ppl, onCpu.ppl, 1e-5 * onCpu.ppl, "ppl");
    assert.ok(onGpu.kld_mean! < 1e-6, `kld_mean ${onGpu.kld_mean}`);
    assert.ok(onGpu.kld_p99! < 1e-6, `kld_p99 ${onGpu.kld_p99}`);
    assert.equal(onGpu.top1_agreement, 1);
  } finally {
    gpu.destroy();
    model.weights.close();
  }
});
