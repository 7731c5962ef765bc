import assert from "node:assert/strict";
import { join } from "node:path";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { loadHf } from "../src/formats/hf.ts";
import { writeHf } from "../src/formats/hf_writer.ts";
import { parseHfConfig } from "../src/formats/hf_config.ts";
import { permuteRopeRows } from "../src/formats/rope_permute.ts";
import { FormatError, UsageError } from "../src/errors.ts";
import { tensorNames } from "../src/model/config.ts";
import type { WeightStore } from "../src/model/model.ts";
import {
  SafetensorsFile,
  type TensorToWrite,
  writeSafetensors,
} from "../src/formats/safetensors.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "./_helpers.ts";
import {
  freshPath,
  PROBE_TOKENS,
  referenceLogits,
  relativeMaxDiff,
  tempDir,
} from "./_format_helpers.ts";

const BASE_CONFIG = {
  model_type: "llama",
  hidden_size: 64,
  intermediate_size: 172,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  vocab_size: 512,
  max_position_embeddings: 512,
};

Deno.test("permuteRopeRows adjacent to half on two heads", () => {
  // Two heads of width 4, one column: row r contains value r.
  const rows = new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual([...permuteRopeRows(rows, 4, 1, "adjacent", "half")], [0, 2, 1, 3, 4, 6, 5, 7]);
  assert.deepEqual([...permuteRopeRows(rows, 4, 1, "half", "adjacent")], [0, 2, 1, 3, 4, 6, 5, 7]);
});

Deno.test("permuteRopeRows half to adjacent inverts adjacent to half", () => {
  // Head width 6 is where the two directions differ (a 3-cycle, not a swap).
  const rows = Float32Array.from({ length: 2 * 6 * 3 }, (_, i) => i);
  const half = permuteRopeRows(rows, 6, 3, "adjacent", "half");
  assert.notDeepEqual([...half], [...rows]);
  assert.notDeepEqual([...permuteRopeRows(rows, 6, 3, "half", "adjacent")], [...half]);
  assert.deepEqual([...permuteRopeRows(half, 6, 3, "half", "adjacent")], [...rows]);
  // Row 2 (pair 1, first element) moves to row 1 under adjacent to half; its 3 columns move with it.
  assert.deepEqual([...half.subarray(3, 6)], [6, 7, 8]);
});

Deno.test("parseHfConfig applies transformers defaults", () => {
  const c = parseHfConfig(BASE_CONFIG, "config.json");
  assert.equal(c.nKvHeads, 8);
  assert.equal(c.headDim, 8);
  assert.equal(c.ropeTheta, 10000);
  assert.equal(c.normEps, 1e-6);
  assert.equal(c.tiedEmbeddings, false);
  assert.equal(c.qkvBias, false);
  assert.equal(c.ropeStyle, "half");
});

Deno.test("parseHfConfig reads qwen2 bias and eos lists", () => {
  const c = parseHfConfig({
    ...BASE_CONFIG,
    model_type: "qwen2",
    eos_token_id: [2, 7],
    bos_token_id: 1,
    sliding_window: 64,
    use_sliding_window: false,
  }, "config.json");
  assert.equal(c.qkvBias, true);
  assert.deepEqual(c.eosIds, [2, 7]);
  assert.equal(c.bosId, 1);
  assert.equal(c.maxSeqLen, 512, "an unused sliding window does not cap the context");
});

Deno.test("parseHfConfig caps mistral context at the sliding window", () => {
  const c = parseHfConfig(
    { ...BASE_CONFIG, model_type: "mistral", sliding_window: 128 },
    "config.json",
  );
  assert.equal(c.maxSeqLen, 128);
});

Deno.test("parseHfConfig rejects unsupported rope scaling", () => {
  const json = { ...BASE_CONFIG, rope_scaling: { rope_type: "llama3", factor: 8 } };
  assert.throws(() => parseHfConfig(json, "m/config.json"), (err: Error) => {
    assert.ok(err instanceof FormatError);
    assert.match(err.message, /m\/config\.json: rope_scaling: .*llama3.*not supported/);
    return true;
  });
  assert.doesNotThrow(() =>
    parseHfConfig({ ...BASE_CONFIG, rope_scaling: { rope_type: "default" } }, "c")
  );
});

Deno.test("parseHfConfig reads transformers 5 rope_parameters", () => {
  const json = { ...BASE_CONFIG, rope_parameters: { rope_type: "default", rope_theta: 500000 } };
  assert.equal(parseHfConfig(json, "c.json").ropeTheta, 500000);
  const scaled = { ...BASE_CONFIG, rope_parameters: { rope_type: "yarn", rope_theta: 1e6 } };
  assert.throws(
    () => parseHfConfig(scaled, "c.json"),
    /rope_parameters: Rope scaling "yarn" is not supported/,
  );
});

Deno.test("parseHfConfig rejects unknown model types", () => {
  assert.throws(
    () => parseHfConfig({ ...BASE_CONFIG, model_type: "gpt2" }, "c.json"),
    /model_type: Unsupported model type "gpt2"/,
  );
});

Deno.test("writeHf then loadHf keeps stories260K logits", async () => {
  const source = await loadLlama2c(STORIES_260K);
  const out = await freshPath("stories-hf");
  await writeHf(source, out, { quiet: true });
  const back = await loadHf(out);
  try {
    assert.equal(back.format, "hf");
    assert.equal(back.config.ropeStyle, "half");
    assert.deepEqual({ ...back.config, ropeStyle: "adjacent" }, source.config);
    const before = await referenceLogits(source.config, source.weights, PROBE_TOKENS);
    const after = await referenceLogits(back.config, back.weights, PROBE_TOKENS);
    assert.ok(
      relativeMaxDiff(before, after) <= 1e-5,
      `relative difference ${relativeMaxDiff(before, after)}`,
    );
  } finally {
    source.weights.close();
    back.weights.close();
  }
});

Deno.test("writeHf permutes q/k rows into the half convention", async () => {
  const source = await loadLlama2c(STORIES_260K);
  const out = await freshPath("stories-hf");
  await writeHf(source, out, { quiet: true });
  const back = await loadHf(out);
  try {
    const { headDim, dim } = source.config;
    for (
      const name of [
        tensorNames.linear(2, "self_attn.q_proj"),
        tensorNames.linear(2, "self_attn.k_proj"),
      ]
    ) {
      const want = permuteRopeRows(
        await source.weights.read(name),
        headDim,
        dim,
        "adjacent",
        "half",
      );
      assert.deepEqual(await back.weights.read(name), want, name);
    }
    const v = tensorNames.linear(2, "self_attn.v_proj");
    assert.deepEqual(
      await back.weights.read(v),
      await source.weights.read(v),
      "v_proj is not permuted",
    );
  } finally {
    source.weights.close();
    back.weights.close();
  }
});

Deno.test("writeHf f16 and bf16 keep logits within tolerance", async () => {
  const source = await loadLlama2c(STORIES_260K);
  const before = await referenceLogits(source.config, source.weights, PROBE_TOKENS);
  try {
    for (const [dtype, tolerance] of [["f16", 5e-3], ["bf16", 6e-2]] as const) {
      const out = await freshPath(`stories-${dtype}`);
      await writeHf(source, out, { dtype, quiet: true });
      const header = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
      assert.equal(header.torch_dtype, dtype === "f16" ? "float16" : "bfloat16");
      const back = await loadHf(out);
      const diff = relativeMaxDiff(
        before,
        await referenceLogits(back.config, back.weights, PROBE_TOKENS),
      );
      back.weights.close();
      assert.ok(diff > 0, `${dtype}: rounding changed no logit`);
      assert.ok(diff <= tolerance, `${dtype}: relative difference ${diff}`);
    }
  } finally {
    source.weights.close();
  }
});

Deno.test("writeHf shards above maxShardBytes and loadHf reads the shards", async () => {
  const source = await loadLlama2c(STORIES_260K);
  const out = await freshPath("stories-sharded");
  await writeHf(source, out, { maxShardBytes: 300_000, quiet: true });
  const index = JSON.parse(await Deno.readTextFile(join(out, "model.safetensors.index.json")));
  const shards = new Set(Object.values(index.weight_map));
  assert.ok(shards.size >= 3, `${shards.size} shards`);
  assert.ok([...shards].every((s) => /^model-0000\d-of-0000\d\.safetensors$/.test(s as string)));
  const back = await loadHf(out);
  try {
    const before = await referenceLogits(source.config, source.weights, PROBE_TOKENS);
    const after = await referenceLogits(back.config, back.weights, PROBE_TOKENS);
    assert.ok(relativeMaxDiff(before, after) <= 1e-5);
  } finally {
    source.weights.close();
    back.weights.close();
  }
});

Deno.test("writeHf round-trips a Qwen2 model with bias and untied head", async () => {
  for (const ropeStyle of ["half", "adjacent"] as const) {
    const config = tinyConfig({
      architecture: "qwen2",
      qkvBias: true,
      tiedEmbeddings: false,
      ropeStyle,
      ropeTheta: 1e6,
      bosId: 3,
      eosIds: [4, 5],
    });
    const weights = randomWeights(config, 7);
    const out = await freshPath(`qwen2-${ropeStyle}`);
    await writeHf({ config, weights }, out, { quiet: true });
    const back = await loadHf(out);
    try {
      assert.equal(back.config.qkvBias, true);
      assert.equal(back.config.tiedEmbeddings, false);
      assert.deepEqual(back.config.eosIds, [4, 5]);
      assert.ok(back.weights.names().includes(tensorNames.bias(1, "self_attn.k_proj")));
      assert.ok(back.weights.names().includes(tensorNames.lmHead));
      const before = await referenceLogits(config, weights, PROBE_TOKENS);
      const after = await referenceLogits(back.config, back.weights, PROBE_TOKENS);
      assert.ok(
        relativeMaxDiff(before, after) <= 1e-5,
        `${ropeStyle}: ${relativeMaxDiff(before, after)}`,
      );
    } finally {
      back.weights.close();
    }
  }
});

Deno.test("writeHf rejects an existing output", async () => {
  const config = tinyConfig({ ropeStyle: "half" });
  const out = await tempDir();
  await assert.rejects(
    () => writeHf({ config, weights: randomWeights(config) }, out, { quiet: true }),
    UsageError,
  );
  assert.deepEqual([...Deno.readDirSync(out)], []);
});

Deno.test("writeHf leaves nothing behind when a read fails", async () => {
  const config = tinyConfig({ ropeStyle: "half" });
  const good = randomWeights(config);
  const failing: WeightStore = {
    source: "failing",
    names: () => good.names(),
    shape: (n) => good.shape(n),
    read: (n) => n.includes("layers.1") ? Promise.reject(new Error("disk error")) : good.read(n),
    close: () => {},
  };
  const out = await freshPath("partial");
  await assert.rejects(
    () => writeHf({ config, weights: failing }, out, { quiet: true }),
    /disk error/,
  );
  assert.deepEqual(
    [...Deno.readDirSync(join(out, ".."))],
    [],
    "neither the output nor its temporary directory remains",
  );
});

Deno.test("loadHf reads tokenizer.json and the chat template", async () => {
  const config = tinyConfig({ ropeStyle: "half", vocabSize: 5 });
  const out = await freshPath("with-tokenizer");
  const tokenizerJson = {
    model: {
      type: "WordLevel",
      vocab: { "<unk>": 0, "<s>": 1, "</s>": 2, hello: 3, world: 4 },
      unk_token: "<unk>",
    },
    normalizer: null,
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: null,
    added_tokens: [
      {
        id: 1,
        content: "<s>",
        special: true,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
      },
      {
        id: 2,
        content: "</s>",
        special: true,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
      },
    ],
  };
  const tokenizerConfig = {
    bos_token: "<s>",
    eos_token: { content: "</s>" },
    chat_template: "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
  };
  const encode = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
  await writeHf({ config, weights: randomWeights(config) }, out, {
    quiet: true,
    files: {
      "tokenizer.json": encode(tokenizerJson),
      "tokenizer_config.json": encode(tokenizerConfig),
    },
  });
  const model = await loadHf(out);
  model.weights.close();
  assert.ok(model.tokenizer);
  assert.equal(model.tokenizer.bosId, 1);
  assert.deepEqual(model.tokenizer.eosIds, [2]);
  assert.deepEqual(model.tokenizer.encode("hello world", { addBos: true }), [1, 3, 4]);
  assert.equal(model.chatTemplate, tokenizerConfig.chat_template);
});

Deno.test("loadHf ignores a stored copy of a tied head", async () => {
  const config = tinyConfig({ ropeStyle: "half", tiedEmbeddings: true });
  const out = await freshPath("tied-copy");
  await writeHf({ config, weights: randomWeights(config) }, out, { quiet: true });
  // Add lm_head (a copy of the embedding), as some tied checkpoints store it.
  const path = join(out, "model.safetensors");
  const file = await SafetensorsFile.open(path);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, info] of file.tensors) {
    tensors[name] = { dtype: info.dtype, shape: info.shape, data: await file.readBytes(name) };
  }
  file.close();
  tensors[tensorNames.lmHead] = tensors[tensorNames.embed];
  await writeSafetensors(path, tensors);
  const model = await loadHf(out);
  model.weights.close();
  assert.ok(!model.weights.names().includes(tensorNames.lmHead));
  assert.equal(model.config.tiedEmbeddings, true);
});

Deno.test("HF weight reads run concurrently", async () => {
  const source = await loadLlama2c(STORIES_260K);
  const out = await freshPath("concurrent-hf");
  await writeHf(source, out, { maxShardBytes: 300_000, quiet: true });
  source.weights.close();
  const model = await loadHf(out);
  try {
    const names = model.weights.names();
    const together = await Promise.all(names.map((n) => model.weights.read(n)));
    for (let i = 0; i < names.length; i++) {
      assert.deepEqual(together[i], await model.weights.read(names[i]), names[i]);
    }
  } finally {
    model.weights.close();
  }
});
