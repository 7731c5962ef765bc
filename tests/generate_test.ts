import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { GpuContext } from "../src/gpu/device.ts";
import { GpuModel } from "../src/model/gpu_model.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { generate } from "../src/model/generate.ts";
import { UsageError } from "../src/errors.ts";
import { loadModel } from "../src/model/load.ts";
import { writeHf } from "../src/formats/hf_writer.ts";
import { join } from "node:path";
import { randomWeights, STORIES_260K, STORIES_GREEDY_64, tinyConfig } from "./_helpers.ts";

const model = await loadLlama2c(STORIES_260K);
const reference = await ReferenceModel.create(model.config, model.weights);
model.weights.close();

Deno.test("generate greedy 200 tokens: GPU equals reference and run.c", async () => {
  const weights = (await loadLlama2c(STORIES_260K)).weights;
  const gpu = await GpuContext.create();
  const lm = await GpuModel.create(gpu, model.config, weights);
  weights.close();
  try {
    const options = { maxTokens: 200, temperature: 0, stopIds: [] };
    const onGpu = await generate(lm, [1], options);
    const onReference = await generate(reference, [1], options);
    assert.equal(onGpu.tokens.length, 200);
    assert.deepEqual(onGpu.tokens, onReference.tokens);
    assert.deepEqual(onGpu.tokens.slice(0, 64), STORIES_GREEDY_64);
    assert.equal(onGpu.stats.stopReason, "max-tokens");
    assert.ok(onGpu.stats.decodeTokensPerSecond > 0);
  } finally {
    lm.dispose();
    gpu.destroy();
  }
});

Deno.test("generate sampling is reproducible from the seed", async () => {
  const options = { maxTokens: 40, temperature: 0.9, topP: 0.9, stopIds: [] };
  const a = await generate(reference, [1], { ...options, seed: 3 });
  const b = await generate(reference, [1], { ...options, seed: 3 });
  const c = await generate(reference, [1], { ...options, seed: 4 });
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
});

Deno.test("generate streams each token to the callback", async () => {
  const streamed: number[] = [];
  const { tokens } = await generate(
    reference,
    [1],
    { maxTokens: 10, temperature: 0, stopIds: [] },
    (id) => streamed.push(id),
  );
  assert.deepEqual(streamed, tokens);
  assert.deepEqual(tokens, STORIES_GREEDY_64.slice(0, 10));
});

Deno.test("generate stops at a stop id without emitting it", async () => {
  // greedy output starts 461 461 401
  const { tokens, stats } = await generate(reference, [1], {
    maxTokens: 50,
    temperature: 0,
    stopIds: [401],
  });
  assert.deepEqual(tokens, [461, 461]);
  assert.equal(stats.stopReason, "stop-id");
  assert.equal(stats.generatedTokens, 2);
});

Deno.test("generate stops at the end of the context", async () => {
  const weights = (await loadLlama2c(STORIES_260K)).weights;
  const gpu = await GpuContext.create();
  const lm = await GpuModel.create(gpu, model.config, weights, { contextLength: 8 });
  weights.close();
  try {
    const { tokens, stats } = await generate(lm, [1, 461], {
      maxTokens: 100,
      temperature: 0,
      stopIds: [],
    });
    // the prompt takes 2 positions; the last token is emitted but never run
    assert.equal(tokens.length, 7);
    assert.equal(stats.stopReason, "context-end");
    assert.deepEqual(tokens, STORIES_GREEDY_64.slice(1, 8));
  } finally {
    lm.dispose();
    gpu.destroy();
  }
});

Deno.test("generate rejects empty and over-long prompts", async () => {
  await assert.rejects(() => generate(reference, [], { maxTokens: 5 }), UsageError);
  const long = new Array(model.config.maxSeqLen).fill(1);
  await assert.rejects(() => generate(reference, long, { maxTokens: 5 }), /no room/);
  await assert.rejects(() => generate(reference, [1], { maxTokens: 5, topP: 0 }), /topP/);
});

const TASK = fileURLToPath(new URL("../tasks/generate.ts", import.meta.url));

async function runTask(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TASK, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("generate task prints greedy ids for --tokens", async () => {
  const { code, stdout, stderr } = await runTask([
    "--model",
    STORIES_260K,
    "--tokens",
    "1",
    "--max-tokens",
    "6",
    "--temperature",
    "0",
    "--quiet",
  ]);
  assert.equal(code, 0, stderr);
  assert.equal(stdout.trim(), STORIES_GREEDY_64.slice(0, 6).join(" "));
});

Deno.test("generate task asks for --tokens when the model has no tokenizer", async () => {
  const { code, stdout, stderr } = await runTask([
    "--model",
    STORIES_260K,
    "--prompt",
    "Once upon a time",
  ]);
  assert.equal(code, 1);
  assert.equal(stdout, "");
  assert.match(stderr, /no tokenizer/);
  assert.match(stderr, /--tokens/);
  assert.equal(stderr.trim().split("\n").length, 1, "one line, no stack trace");
});

Deno.test("generate task runs the shipped reference model without --model", async () => {
  const args = ["--prompt", "The whale", "--max-tokens", "12", "--engine", "reference", "--quiet"];
  const { code, stdout, stderr } = await runTask(args);
  assert.equal(code, 0, stderr);
  assert.ok(stdout.trim().length > 0, "no text was generated");
  // the same seed gives the same text
  assert.equal((await runTask(args)).stdout, stdout);
});

Deno.test("generate task prints decoded text for --prompt", async () => {
  // a Hugging Face directory with a word-level tokenizer over the model's 37 ids
  const config = tinyConfig({ ropeStyle: "half" });
  const vocab = Object.fromEntries(
    Array.from({ length: config.vocabSize }, (_, i) => [i === 0 ? "<unk>" : `w${i}`, i]),
  );
  const tokenizerJson = JSON.stringify({
    model: { type: "WordLevel", vocab, unk_token: "<unk>" },
    normalizer: null,
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: null,
    added_tokens: [],
  });
  const dir = join(await Deno.makeTempDir(), "tiny-hf");
  await writeHf({ config, weights: randomWeights(config, 11) }, dir, {
    quiet: true,
    files: { "tokenizer.json": new TextEncoder().encode(tokenizerJson) },
  });
  const loaded = await loadModel(dir);
  const prompt = loaded.tokenizer!.encode("w3 w5 w7", { addBos: true });
  const lm = await ReferenceModel.create(loaded.config, loaded.weights);
  const { tokens } = await generate(lm, prompt, {
    maxTokens: 8,
    temperature: 0,
    stopIds: loaded.tokenizer!.eosIds,
  });
  const expected = loaded.tokenizer!.decode(tokens);
  loaded.weights.close();
  assert.ok(tokens.length > 0);

  for (const engine of ["gpu", "reference"]) {
    const args = [
      "--model",
      dir,
      "--prompt",
      "w3 w5 w7",
      "--max-tokens",
      "8",
      "--temperature",
      "0",
      "--engine",
      engine,
    ];
    const { code, stdout, stderr } = await runTask(args);
    assert.equal(code, 0, stderr);
    assert.equal(stdout, `${expected}\n`, engine);
    assert.match(stderr, /tokens\/s/, "speeds on stderr");
  }
});
