import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { GpuModel } from "../src/model/gpu_model.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import type { ModelConfig } from "../src/model/config.ts";
import type { WeightStore } from "../src/model/model.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { ShapeError, UsageError } from "../src/errors.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "./_helpers.ts";

/** Largest |a - b| over the largest |b|; logits must agree within 1e-4 of max |logit|. */
function relativeError(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, "logit counts differ");
  let err = 0, max = 0;
  for (let i = 0; i < b.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    max = Math.max(max, Math.abs(b[i]));
  }
  return err / max;
}

/**
 * Runs the same calls on both models and checks every returned set of logits.
 * Each call is [tokens, lastOnly].
 */
async function compareCalls(
  gpu: GpuContext,
  config: ModelConfig,
  weights: WeightStore,
  calls: [number[], boolean][],
  options = {},
): Promise<void> {
  const lm = await GpuModel.create(gpu, config, weights, options);
  const ref = await ReferenceModel.create(config, weights);
  try {
    for (const [tokens, lastOnly] of calls) {
      const pos = lm.position;
      const got = await lm.forward(tokens, { lastOnly });
      const want = await ref.forward(tokens, { lastOnly });
      const err = relativeError(got, want);
      assert.ok(
        err < 1e-4,
        `${tokens.length} tokens at position ${pos} (lastOnly ${lastOnly}): relative error ${err}`,
      );
    }
    assert.equal(lm.position, ref.position);
  } finally {
    lm.dispose();
  }
}

Deno.test("GpuModel matches the reference on stories260K", async () => {
  const model = await loadLlama2c(STORIES_260K);
  const gpu = await GpuContext.create();
  try {
    const prompt = [1, 461, 401, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264];
    await compareCalls(gpu, model.config, model.weights, [[prompt, false], [[288], true], [[
      13,
      431,
    ], false], [[431], true]]);
  } finally {
    gpu.destroy();
    model.weights.close();
  }
});

Deno.test("GpuModel handles half rotary, biases, an untied head and chunked weights", async () => {
  // odd sizes cross 4-row tiles and workgroups; 600-byte chunks split every matrix into several buffers
  const config = tinyConfig({
    ropeStyle: "half",
    qkvBias: true,
    tiedEmbeddings: false,
    vocabSize: 37,
    dim: 24,
    headDim: 6,
  });
  const weights = randomWeights(config, 4);
  const gpu = await GpuContext.create();
  try {
    const calls: [number[], boolean][] = [[[1, 5, 9, 36, 0, 2, 7], false], [[3], true], [
      [4],
      false,
    ], [[8, 8, 8], true]];
    await compareCalls(gpu, config, weights, calls, { maxChunkBytes: 600 });
    // passes of 3 tokens inside one forward call
    await compareCalls(gpu, config, weights, calls, { maxBatchTokens: 3 });
  } finally {
    gpu.destroy();
  }
});

Deno.test("GpuModel handles unaligned widths on the scalar kernels", async () => {
  // head width 5 * 2 = 10, dim 30, hidden 42: none of the vec4 paths apply
  const config = tinyConfig({
    dim: 30,
    nHeads: 3,
    nKvHeads: 1,
    headDim: 10,
    hiddenDim: 42,
    vocabSize: 53,
    ropeStyle: "adjacent",
  });
  const gpu = await GpuContext.create();
  try {
    await compareCalls(gpu, config, randomWeights(config, 5), [[[1, 2, 3, 4, 5], false], [
      [6],
      true,
    ], [[7], false]]);
  } finally {
    gpu.destroy();
  }
});

Deno.test("GpuModel matches the reference at SmolLM-like sizes", async () => {
  // d_model 576, 9 query heads of 64 with 3 key/value heads, hidden 1536, vocab 49152;
  // two blocks keep the reference fast
  const config = tinyConfig({
    dim: 576,
    nHeads: 9,
    nKvHeads: 3,
    headDim: 64,
    hiddenDim: 1536,
    vocabSize: 49152,
    maxSeqLen: 2048,
    nLayers: 2,
    tiedEmbeddings: true,
    ropeStyle: "half",
  });
  const gpu = await GpuContext.create();
  try {
    const prompt = [1, 48000, 17, 3000, 49151, 250, 9];
    await compareCalls(gpu, config, randomWeights(config, 6), [[prompt, false], [[12], true], [
      [13],
      true,
    ]]);
  } finally {
    gpu.destroy();
  }
});

Deno.test("GpuModel attends correctly past the loop cap", async () => {
  // at position 1100 one query's scores take 1100 * 64 = 70400 > 65535 multiply-adds;
  // heads of 64 with GQA 3:1 as at the SmolLM-like sizes, but a narrower model and a
  // small vocabulary keep the reference's 1100 steps fast
  const config = tinyConfig({
    dim: 192,
    nHeads: 3,
    nKvHeads: 1,
    headDim: 64,
    hiddenDim: 320,
    vocabSize: 97,
    maxSeqLen: 2048,
    nLayers: 1,
    tiedEmbeddings: false,
    ropeStyle: "adjacent",
  });
  const prompt = Array.from({ length: 1100 }, (_, i) => (i * 31 + 7) % 97);
  const gpu = await GpuContext.create();
  try {
    const lm = await GpuModel.create(gpu, config, randomWeights(config, 7));
    const ref = await ReferenceModel.create(config, randomWeights(config, 7));
    try {
      const got = await lm.forward(prompt);
      const want = await ref.forward(prompt);
      const V = config.vocabSize;
      for (const row of [0, 555, 1023, 1099]) {
        const err = relativeError(
          got.subarray(row * V, (row + 1) * V),
          want.subarray(row * V, (row + 1) * V),
        );
        assert.ok(err < 1e-4, `prefill row ${row}: relative error ${err}`);
      }
      for (const token of [5, 6]) {
        const err = relativeError(
          await lm.forward([token], { lastOnly: true }),
          await ref.forward([token], { lastOnly: true }),
        );
        assert.ok(err < 1e-4, `decode at position ${lm.position - 1}: relative error ${err}`);
      }
    } finally {
      lm.dispose();
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("GpuModel truncate continues from a shared prefix", async () => {
  const config = tinyConfig();
  const gpu = await GpuContext.create();
  const lm = await GpuModel.create(gpu, config, randomWeights(config, 9));
  try {
    await lm.forward([1, 2, 3, 4, 5]);
    lm.truncate(3);
    assert.equal(lm.position, 3);
    const branched = await lm.forward([9, 10]);
    lm.reset();
    const fresh = await lm.forward([1, 2, 3, 9, 10]);
    // equal up to summation order (the pass sizes differ)
    assert.ok(relativeError(branched, fresh.subarray(3 * config.vocabSize)) < 1e-6);
    assert.throws(() => lm.truncate(6), UsageError);
  } finally {
    lm.dispose();
    gpu.destroy();
  }
});

Deno.test("GpuModel rejects a KV cache larger than one binding", async () => {
  const gpu = await GpuContext.create();
  try {
    // one key/value head of 1024: each cached position takes 4 KiB
    const fits = Math.floor(gpu.limits.maxStorageBufferBindingSize / 4096);
    const config = tinyConfig({
      dim: 8,
      nHeads: 1,
      nKvHeads: 1,
      headDim: 1024,
      maxSeqLen: fits + 1,
    });
    await assert.rejects(
      () => GpuModel.create(gpu, config, randomWeights(config, 10)),
      (err: Error) => err instanceof UsageError && err.message.includes(`at most ${fits}`),
    );
    const lm = await GpuModel.create(gpu, config, randomWeights(config, 10), { contextLength: 16 });
    assert.equal(lm.contextLength, 16);
    lm.dispose();
  } finally {
    gpu.destroy();
  }
});

Deno.test("GpuModel rejects bad input", async () => {
  const config = tinyConfig();
  const gpu = await GpuContext.create();
  try {
    const lm = await GpuModel.create(gpu, config, randomWeights(config, 8), { contextLength: 4 });
    await assert.rejects(() => lm.forward([config.vocabSize]), UsageError);
    await assert.rejects(() => lm.forward([1, 2, 3, 4, 5]), /Context is full/);
    await lm.forward([1, 2, 3, 4]);
    await assert.rejects(() => lm.forward([1]), /Context is full/);
    lm.reset();
    assert.equal(lm.position, 0);
    lm.dispose();

    const weights = randomWeights(config, 8);
    const tensors = new Map(
      weights.names().map((n) => [n, { shape: weights.shape(n), data: new Float32Array(0) }]),
    );
    tensors.set("model.layers.1.mlp.up_proj.weight", {
      shape: [config.hiddenDim, config.dim + 1],
      data: new Float32Array(0),
    });
    await assert.rejects(
      () => GpuModel.create(gpu, config, new MemoryWeightStore("bad", tensors)),
      (err: Error) =>
        err instanceof ShapeError && err.message.includes("model.layers.1.mlp.up_proj.weight"),
    );
  } finally {
    gpu.destroy();
  }
});
