import assert from "node:assert/strict";
import { quantizeModel } from "../src/quantize/quantize_model.ts";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { convertModel } from "../src/formats/convert.ts";
import { GgufFile } from "../src/formats/gguf.ts";
import { writeGguf } from "../src/formats/gguf_writer.ts";
import { writeHf } from "../src/formats/hf_writer.ts";
import { type GgufEntry, GgufType } from "../src/formats/gguf_types.ts";
import { loadModel } from "../src/model/load.ts";
import { tensorNames } from "../src/model/config.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { UsageError } from "../src/errors.ts";
import { byteLevelTokenizerJson } from "../src/tokenizer/gguf_tokenizer.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "./_helpers.ts";
import {
  freshPath,
  PROBE_TOKENS,
  referenceLogits,
  relativeMaxDiff,
  tempDir,
} from "./_format_helpers.ts";

const TASK = fileURLToPath(new URL("../tasks/convert.ts", import.meta.url));

/** Runs `deno run -A tasks/convert.ts ARGS` and returns its exit code and output. */
async function runTask(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TASK, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

Deno.test("convert task writes HF and GGUF outputs that load", async () => {
  for (const [to, dtype, name] of [["hf", "f16", "stories-hf"], ["gguf", "q8_0", "stories.gguf"]]) {
    const out = await freshPath(name);
    const result = await runTask([
      "--model",
      STORIES_260K,
      "--to",
      to,
      "--dtype",
      dtype,
      "--out",
      out,
      "--quiet",
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, "");
    const model = await loadModel(out);
    model.weights.close();
    assert.equal(model.format, to);
    assert.equal(model.config.ropeStyle, to === "hf" ? "half" : "adjacent");
    assert.equal(model.config.vocabSize, 512);
  }
});

Deno.test("convert task prints one-line errors", async () => {
  const existing = await tempDir();
  const out = await freshPath("never.gguf");
  // case: arguments, expected message
  const cases: [string[], RegExp][] = [
    [["--model", STORIES_260K, "--to", "gguf"], /Missing --out/],
    [
      ["--model", STORIES_260K, "--to", "onnx", "--out", out],
      /Invalid --to "onnx": expected hf or gguf/,
    ],
    [
      ["--model", STORIES_260K, "--to", "hf", "--dtype", "q8_0", "--out", out],
      /Invalid --dtype "q8_0" for --to hf/,
    ],
    [["--model", "/nonexistent/model.bin", "--to", "gguf", "--out", out], /Model path not found/],
    [["--model", STORIES_260K, "--to", "gguf", "--out", existing], /already exists/],
    [["--model", STORIES_260K, "--bogus"], /Unknown option '--bogus'/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runTask(args);
    assert.equal(result.code, 1, args.join(" "));
    const lines = result.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0], /^convert: /);
    assert.match(lines[0], pattern);
  }
  await assert.rejects(() => Deno.lstat(out), Deno.errors.NotFound);
  assert.deepEqual([...Deno.readDirSync(existing)], [], "an existing output is left untouched");
});

Deno.test("convert task leaves no output when a tensor fails mid-write", async () => {
  const config = tinyConfig();
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const source = randomWeights(config);
  for (const n of source.names()) {
    tensors.set(n, { shape: source.shape(n), data: await source.read(n) });
  }
  tensors.get(tensorNames.linear(1, "mlp.down_proj"))!.data[0] = NaN;
  const input = await freshPath("nan.gguf");
  await writeGguf({ config, weights: new MemoryWeightStore("mem", tensors) }, input, {
    quiet: true,
  });
  for (const [to, name] of [["hf", "out-hf"], ["gguf", "out.gguf"]]) {
    const out = await freshPath(name);
    const result = await runTask(["--model", input, "--to", to, "--out", out, "--quiet"]);
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /^convert: .*nan\.gguf: blk\.1\.ffn_down\.weight: Element 0 is NaN/,
    );
    assert.deepEqual(
      [...Deno.readDirSync(dirname(out))],
      [],
      `${to}: no output or temporary file remains`,
    );
  }
});

Deno.test("convertModel chains HF, GGUF and HF with the same logits", async () => {
  const source = await loadModel(STORIES_260K);
  const before = await referenceLogits(source.config, source.weights, PROBE_TOKENS);
  const hf1 = await freshPath("a-hf"),
    gguf = await freshPath("b.gguf"),
    hf2 = await freshPath("c-hf");
  await convertModel(source, { to: "hf", out: hf1, quiet: true });
  source.weights.close();
  for (const [from, to, out] of [[hf1, "gguf", gguf], [gguf, "hf", hf2]] as const) {
    const model = await loadModel(from);
    await convertModel(model, { to, out, quiet: true });
    model.weights.close();
  }
  const last = await loadModel(hf2);
  const diff = relativeMaxDiff(
    before,
    await referenceLogits(last.config, last.weights, PROBE_TOKENS),
  );
  last.weights.close();
  assert.ok(diff <= 1e-5, `relative difference ${diff}`);
});

Deno.test("convertModel carries a GGUF vocabulary and chat template", async () => {
  // A byte-level vocabulary: the 256 single-byte tokens in GPT-2's character mapping, one merge.
  const direct = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  const tokens = [
    ...Array.from({ length: 256 }, (_, b) => String.fromCodePoint(direct(b) ? b : 256 + extra++)),
    "hi",
    "<|end|>",
  ];
  const types = tokens.map((_, i) => (i === 257 ? 3 : 1));
  const metadata = new Map<string, GgufEntry>([
    ["tokenizer.ggml.model", { type: GgufType.STRING, value: "gpt2" }],
    ["tokenizer.ggml.tokens", { type: GgufType.ARRAY, itemType: GgufType.STRING, value: tokens }],
    ["tokenizer.ggml.token_type", { type: GgufType.ARRAY, itemType: GgufType.INT32, value: types }],
    ["tokenizer.ggml.merges", { type: GgufType.ARRAY, itemType: GgufType.STRING, value: ["h i"] }],
  ]);
  const config = tinyConfig({ vocabSize: tokens.length, eosIds: [257] });
  const template = "{% for m in messages %}{{ m.content }}<|end|>{% endfor %}";
  const input = await freshPath("vocab.gguf");
  await writeGguf({ config, weights: randomWeights(config) }, input, {
    quiet: true,
    metadata,
    chatTemplate: template,
  });
  const source = await loadModel(input);
  const want = source.tokenizer!.encode("hi there<|end|>");
  assert.equal(want[0], 256);

  const gguf = await freshPath("copy.gguf");
  await convertModel(source, { to: "gguf", dtype: "f16", out: gguf, quiet: true });
  const file = await GgufFile.open(gguf);
  file.close();
  for (const [key, entry] of metadata) assert.deepEqual(file.metadata.get(key), entry, key);

  const hf = await freshPath("vocab-hf");
  await convertModel(source, { to: "hf", out: hf, quiet: true });
  source.weights.close();
  for (const path of [gguf, hf]) {
    const model = await loadModel(path);
    model.weights.close();
    assert.deepEqual(model.tokenizer?.encode("hi there<|end|>"), want, path);
    assert.deepEqual(model.tokenizer?.eosIds, [257], path);
    assert.equal(model.chatTemplate, template, path);
  }
  assert.ok((await Deno.stat(join(hf, "tokenizer.json"))).isFile);

  // a model quantized from the GGUF file carries the vocabulary and template too
  const quantized = await freshPath("vocab-q.safetensors");
  const reloaded = await loadModel(input);
  await quantizeModel(reloaded, null, {
    method: "rtn",
    bits: 8,
    groupSize: 8,
    out: quantized,
    quiet: true,
  });
  reloaded.weights.close();
  const q = await loadModel(quantized);
  q.weights.close();
  assert.deepEqual(q.tokenizer?.encode("hi there<|end|>"), want);
  assert.equal(q.chatTemplate, template);
});

Deno.test("convertModel copies HF tokenizer files", async () => {
  const config = tinyConfig({ vocabSize: 3 });
  const input = await freshPath("src-hf");
  const memory = {
    config: { ...config, ropeStyle: "half" as const },
    weights: randomWeights(config),
  };
  const tokenizerJson = JSON.stringify({
    model: { type: "WordLevel", vocab: { "<unk>": 0, a: 1, b: 2 }, unk_token: "<unk>" },
    normalizer: null,
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: null,
    added_tokens: [],
  });
  await writeHf(memory, input, {
    quiet: true,
    files: { "tokenizer.json": new TextEncoder().encode(tokenizerJson) },
    chatTemplate: "{{ 'x' }}",
  });
  const source = await loadModel(input);
  const out = await freshPath("dst-hf");
  await convertModel(source, { to: "hf", dtype: "bf16", out, quiet: true });
  source.weights.close();
  assert.equal(await Deno.readTextFile(join(out, "tokenizer.json")), tokenizerJson);
  assert.equal(await Deno.readTextFile(join(out, "chat_template.jinja")), "{{ 'x' }}");
  await assert.rejects(() => convertModel(source, { to: "hf", out: input }), UsageError);
});

Deno.test("convertModel carries a byte-level tokenizer.json into GGUF", async () => {
  // A byte-level vocabulary with a Qwen2 split and two added tokens.
  const direct = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  const bytes = Array.from(
    { length: 256 },
    (_, b) => String.fromCodePoint(direct(b) ? b : 256 + extra++),
  );
  const tokens = [...bytes, "he", "hel", "<|im_start|>", "<tool>"];
  // GGUF token types: <|im_start|> is control (3), <tool> user-defined (4), the rest normal (1).
  const types = tokens.map(() => 1);
  types[258] = 3;
  types[259] = 4;
  const json = byteLevelTokenizerJson(tokens, types, ["h e", "he l"], "qwen2");
  const config = tinyConfig({
    vocabSize: tokens.length,
    architecture: "qwen2",
    qkvBias: true,
    ropeStyle: "half",
  });
  const input = await freshPath("bpe-hf");
  const encode = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
  await writeHf({ config, weights: randomWeights(config) }, input, {
    quiet: true,
    files: { "tokenizer.json": encode(json) },
  });
  const source = await loadModel(input);
  const out = await freshPath("bpe.gguf");
  await convertModel(source, { to: "gguf", out, quiet: true });
  source.weights.close();
  const back = await loadModel(out);
  back.weights.close();
  const text = "<|im_start|>hello <tool> h\u00e9llo 123";
  assert.deepEqual(back.tokenizer?.encode(text), source.tokenizer?.encode(text));
  assert.equal(back.tokenizer?.decode(back.tokenizer.encode(text)), "hello <tool> h\u00e9llo 123");
  const file = await GgufFile.open(out);
  file.close();
  assert.equal(file.get("tokenizer.ggml.pre"), "qwen2");
});

Deno.test("convertModel drops a tokenizer GGUF cannot describe", async () => {
  const config = tinyConfig({ vocabSize: 3, ropeStyle: "half" });
  const input = await freshPath("wordlevel-hf");
  const json = {
    model: { type: "WordLevel", vocab: { "<unk>": 0, a: 1, b: 2 }, unk_token: "<unk>" },
    normalizer: null,
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: null,
    added_tokens: [],
  };
  await writeHf({ config, weights: randomWeights(config) }, input, {
    quiet: true,
    files: { "tokenizer.json": new TextEncoder().encode(JSON.stringify(json)) },
  });
  const source = await loadModel(input);
  const out = await freshPath("wordlevel.gguf");
  await convertModel(source, { to: "gguf", out, quiet: true });
  source.weights.close();
  const back = await loadModel(out);
  back.weights.close();
  assert.equal(back.tokenizer, null);
});
