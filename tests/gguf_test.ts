import assert from "node:assert/strict";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { loadHf } from "../src/formats/hf.ts";
import { writeHf } from "../src/formats/hf_writer.ts";
import { GgufFile } from "../src/formats/gguf.ts";
import { loadGguf } from "../src/formats/gguf_model.ts";
import { storedGgmlType, writeGguf } from "../src/formats/gguf_writer.ts";
import { type GgufEntry, ggufToHfName, GgufType, hfToGgufName } from "../src/formats/gguf_types.ts";
import { dequantizeQ8_0, quantizeQ8_0 } from "../src/formats/q8_0.ts";
import { decodeToF32, encodeFromF32, f16ToF32, f32ToF16 } from "../src/formats/dtype.ts";
import { permuteRopeRows } from "../src/formats/rope_permute.ts";
import { loadModel } from "../src/model/load.ts";
import { tensorNames } from "../src/model/config.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "./_helpers.ts";
import {
  freshPath,
  offsetAfter,
  PROBE_TOKENS,
  referenceLogits,
  relativeMaxDiff,
} from "./_format_helpers.ts";

Deno.test("quantizeQ8_0 follows ggml's reference rounding", () => {
  // amax 63.5 gives d = 0.5 exactly, so q = round(x / 0.5) with halves away from zero.
  const x = new Float32Array(32);
  x.set([63.5, -63.5, 0.25, -0.25, 0.74, 1.26, 0]);
  const bytes = quantizeQ8_0(x);
  assert.equal(bytes.length, 34);
  const view = new DataView(bytes.buffer);
  assert.equal(f16ToF32(view.getUint16(0, true)), 0.5);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((j) => view.getInt8(2 + j)), [
    127,
    -127,
    1,
    -1,
    1,
    3,
    0,
  ]);
  assert.deepEqual([...dequantizeQ8_0(bytes, 32).subarray(0, 4)], [63.5, -63.5, 0.5, -0.5]);
});

Deno.test("quantizeQ8_0 stores the f16 scale of amax / 127", () => {
  const x = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * (i < 32 ? 1 : 1e-3));
  const bytes = quantizeQ8_0(x);
  const view = new DataView(bytes.buffer);
  for (let b = 0; b < 2; b++) {
    const amax = Math.max(...x.subarray(32 * b, 32 * b + 32).map(Math.abs));
    assert.equal(view.getUint16(34 * b, true), f32ToF16(Math.fround(amax / 127)));
  }
  const back = dequantizeQ8_0(bytes, 64);
  for (let i = 0; i < 64; i++) {
    assert.ok(Math.abs(back[i] - x[i]) <= (i < 32 ? 1 : 1e-3) / 127, `element ${i}`);
  }
  // An all-zero block has scale 0 and zero codes rather than NaN.
  assert.deepEqual(
    [...dequantizeQ8_0(quantizeQ8_0(new Float32Array(32)), 32)],
    new Array(32).fill(0),
  );
});

Deno.test("tensor names map between Hugging Face and GGUF", () => {
  for (
    const name of [
      tensorNames.embed,
      tensorNames.lmHead,
      tensorNames.finalNorm,
      tensorNames.bias(3, "self_attn.v_proj"),
      tensorNames.linear(11, "mlp.down_proj"),
    ]
  ) {
    assert.equal(ggufToHfName(hfToGgufName(name)), name);
  }
  assert.equal(hfToGgufName(tensorNames.attnNorm(0)), "blk.0.attn_norm.weight");
  assert.equal(ggufToHfName("blk.0.attn_qkv.weight"), undefined);
});

Deno.test("writeGguf then loadGguf keeps stories260K logits", async () => {
  const source = await loadLlama2c(STORIES_260K);
  const out = await freshPath("stories.gguf");
  await writeGguf(source, out, { quiet: true, name: "stories260K" });
  const back = await loadGguf(out);
  try {
    assert.equal(back.config.ropeStyle, "adjacent");
    assert.deepEqual({ ...back.config, normEps: source.config.normEps }, source.config);
    assert.ok(Math.abs(back.config.normEps - 1e-5) < 1e-12);
    // Adjacent source, adjacent file: q_proj is stored unpermuted.
    const q = tensorNames.linear(0, "self_attn.q_proj");
    assert.deepEqual(await back.weights.read(q), await source.weights.read(q));
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

Deno.test("writeGguf f16 and q8_0 keep logits within tolerance", async () => {
  const source = await loadLlama2c(STORIES_260K);
  const before = await referenceLogits(source.config, source.weights, PROBE_TOKENS);
  try {
    for (const [dtype, tolerance] of [["f16", 5e-3], ["q8_0", 0.15]] as const) {
      const out = await freshPath(`stories.${dtype}.gguf`);
      await writeGguf(source, out, { dtype, quiet: true });
      const file = await GgufFile.open(out);
      const types = new Set([...file.tensors.values()].map((t) => t.type));
      assert.equal(file.tensors.get("output_norm.weight")?.type, "F32", "norms stay f32");
      if (dtype === "q8_0") {
        assert.equal(file.tensors.get("blk.0.attn_q.weight")?.type, "Q8_0");
        // ffn_down rows have 172 values, not a multiple of 32, so they fall back to f16.
        assert.equal(file.tensors.get("blk.0.ffn_down.weight")?.type, "F16");
      } else {
        assert.deepEqual([...types].sort(), ["F16", "F32"]);
      }
      assert.equal(file.get("general.file_type"), dtype === "f16" ? 1 : 7);
      file.close();
      const back = await loadGguf(out);
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

Deno.test("writeGguf stores a half-style llama source as adjacent pairs", async () => {
  // stories260K -> HF (permuted to half) -> GGUF (permuted back to adjacent).
  const source = await loadLlama2c(STORIES_260K);
  const hfDir = await freshPath("stories-hf");
  await writeHf(source, hfDir, { quiet: true });
  const hf = await loadHf(hfDir);
  const out = await freshPath("from-hf.gguf");
  await writeGguf(hf, out, { quiet: true });
  const back = await loadGguf(out);
  try {
    for (const which of ["self_attn.q_proj", "self_attn.k_proj"] as const) {
      const name = tensorNames.linear(4, which);
      assert.deepEqual(await back.weights.read(name), await source.weights.read(name), name);
    }
    const before = await referenceLogits(hf.config, hf.weights, PROBE_TOKENS);
    const after = await referenceLogits(back.config, back.weights, PROBE_TOKENS);
    assert.ok(relativeMaxDiff(before, after) <= 1e-5);
  } finally {
    source.weights.close();
    hf.weights.close();
    back.weights.close();
  }
});

Deno.test("writeGguf round-trips a Qwen2 model with bias and untied head", async () => {
  for (const ropeStyle of ["half", "adjacent"] as const) {
    const config = tinyConfig({
      architecture: "qwen2",
      qkvBias: true,
      tiedEmbeddings: false,
      ropeStyle,
      ropeTheta: 1e6,
      dim: 64,
      hiddenDim: 96,
      nHeads: 4,
      headDim: 16,
    });
    const weights = randomWeights(config, 11);
    const out = await freshPath(`qwen2-${ropeStyle}.gguf`);
    await writeGguf({ config, weights }, out, { quiet: true });
    const back = await loadGguf(out);
    try {
      assert.equal(back.config.ropeStyle, "half", "qwen2 GGUF files use NEOX order");
      assert.equal(back.config.qkvBias, true);
      assert.equal(back.config.tiedEmbeddings, false);
      const qBias = tensorNames.bias(0, "self_attn.q_proj");
      const want = permuteRopeRows(await weights.read(qBias), 16, 1, ropeStyle, "half");
      assert.deepEqual(await back.weights.read(qBias), want);
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

Deno.test("GgufFile reads every metadata value type", async () => {
  const config = tinyConfig({ ropeStyle: "adjacent" });
  const entries: [string, GgufEntry][] = [
    ["test.u8", { type: GgufType.UINT8, value: 200 }],
    ["test.i8", { type: GgufType.INT8, value: -100 }],
    ["test.u16", { type: GgufType.UINT16, value: 60000 }],
    ["test.i16", { type: GgufType.INT16, value: -30000 }],
    ["test.u32", { type: GgufType.UINT32, value: 4000000000 }],
    ["test.i32", { type: GgufType.INT32, value: -2000000000 }],
    ["test.f32", { type: GgufType.FLOAT32, value: 0.5 }],
    ["test.bool", { type: GgufType.BOOL, value: true }],
    ["test.string", { type: GgufType.STRING, value: "h\u00e9llo \u2581" }],
    ["test.u64", { type: GgufType.UINT64, value: 2n ** 60n }],
    ["test.i64", { type: GgufType.INT64, value: -12345678901 }],
    ["test.f64", { type: GgufType.FLOAT64, value: Math.PI }],
    ["test.array_i32", { type: GgufType.ARRAY, itemType: GgufType.INT32, value: [1, -2, 3] }],
    ["test.array_str", {
      type: GgufType.ARRAY,
      itemType: GgufType.STRING,
      value: ["a", "", "ccc"],
    }],
    ["test.array_empty", { type: GgufType.ARRAY, itemType: GgufType.FLOAT32, value: [] }],
  ];
  const out = await freshPath("types.gguf");
  await writeGguf({ config, weights: randomWeights(config) }, out, {
    quiet: true,
    metadata: new Map(entries),
    alignment: 64,
  });
  const file = await GgufFile.open(out);
  try {
    assert.equal(file.version, 3);
    assert.equal(file.alignment, 64);
    for (const [key, entry] of entries) assert.deepEqual(file.metadata.get(key), entry, key);
    for (const t of file.tensors.values()) assert.equal(t.offset % 64, 0, t.name);
  } finally {
    file.close();
  }
  const back = await loadGguf(out);
  back.weights.close();
  assert.equal(back.config.nLayers, config.nLayers);
});

Deno.test("loadModel detects GGUF files by magic", async () => {
  const config = tinyConfig();
  const out = await freshPath("detect.bin");
  await writeGguf({ config, weights: randomWeights(config) }, out, { quiet: true });
  const model = await loadModel(out);
  model.weights.close();
  assert.equal(model.format, "gguf");
});

Deno.test("storedGgmlType keeps vectors f32 and falls back to f16", () => {
  assert.equal(storedGgmlType([64], "q8_0"), "F32");
  assert.equal(storedGgmlType([64, 64], "q8_0"), "Q8_0");
  assert.equal(storedGgmlType([64, 172], "q8_0"), "F16");
  assert.equal(storedGgmlType([64, 172], "f32"), "F32");
  assert.equal(storedGgmlType([64, 64], "f16"), "F16");
});

Deno.test("loadGguf reads BF16 tensors", async () => {
  const config = tinyConfig();
  const path = await freshPath("bf16.gguf");
  await writeGguf({ config, weights: randomWeights(config) }, path, { dtype: "f16", quiet: true });
  // Rewrite one F16 tensor as BF16 in place: same element size, type id 30.
  const file = await GgufFile.open(path);
  const info = file.tensors.get("blk.0.attn_q.weight")!;
  const values = await file.readF32(info.name);
  file.close();
  const bytes = await Deno.readFile(path);
  bytes.set(encodeFromF32(values, "BF16"), info.offset);
  new DataView(bytes.buffer).setUint32(offsetAfter(bytes, info.name) + 4 + 16, 30, true);
  await Deno.writeFile(path, bytes);
  const model = await loadGguf(path);
  try {
    const got = await model.weights.read(tensorNames.linear(0, "self_attn.q_proj"));
    assert.deepEqual(got, decodeToF32(encodeFromF32(values, "BF16"), "BF16"));
  } finally {
    model.weights.close();
  }
});

Deno.test("loadGguf rejects rope scaling", async () => {
  const config = tinyConfig();
  const path = await freshPath("scaled.gguf");
  const metadata = new Map<string, GgufEntry>([["llama.rope.scaling.type", {
    type: GgufType.STRING,
    value: "linear",
  }]]);
  await writeGguf({ config, weights: randomWeights(config) }, path, { quiet: true, metadata });
  await assert.rejects(
    () => loadGguf(path),
    /llama\.rope\.scaling\.type: Rope scaling "linear" is not supported/,
  );
});

Deno.test("writeGguf round-trips a mistral model as adjacent pairs", async () => {
  const config = tinyConfig({ architecture: "mistral", ropeStyle: "half", tiedEmbeddings: true });
  const weights = randomWeights(config, 5);
  const path = await freshPath("mistral.gguf");
  await writeGguf({ config, weights }, path, { quiet: true });
  const back = await loadGguf(path);
  try {
    assert.equal(back.config.architecture, "mistral");
    assert.equal(back.config.ropeStyle, "adjacent");
    assert.equal(back.config.tiedEmbeddings, true);
    const before = await referenceLogits(config, weights, PROBE_TOKENS);
    const after = await referenceLogits(back.config, back.weights, PROBE_TOKENS);
    assert.ok(relativeMaxDiff(before, after) <= 1e-5);
  } finally {
    back.weights.close();
  }
});

Deno.test("GGUF weight reads run concurrently", async () => {
  const source = await loadLlama2c(STORIES_260K);
  const path = await freshPath("concurrent.gguf");
  await writeGguf(source, path, { dtype: "q8_0", quiet: true });
  source.weights.close();
  const model = await loadGguf(path);
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
