import assert from "node:assert/strict";
import {
  f16Tensor,
  openQuantizedModel,
  packChannelOrder,
  packIndices,
  type QuantizedModelFile,
  u32Tensor,
  unpackIndices,
  type VqLayerDesc,
  writeQuantizedModel,
} from "../src/formats/quantized.ts";
import { SafetensorsFile, writeSafetensors } from "../src/formats/safetensors.ts";
import { FormatError } from "../src/errors.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { loadModel } from "../src/model/load.ts";
import { packedIndexBytes } from "../src/quantize/bpw.ts";
import { relativeError } from "../src/quantize/layer_report.ts";
import {
  linearPrefixes,
  quantizeModel,
  type QuantizeOptions,
} from "../src/quantize/quantize_model.ts";
import { syntheticStatistics } from "../src/quantize/statistics.ts";
import { rowScale } from "../src/quantize/vq_layer.ts";
import { roundF16 } from "../src/quantize/uniform.ts";
import { Rng } from "../src/util/rng.ts";
import { STORIES_260K, tinyConfig } from "./_helpers.ts";

/** Bytes a layer's tensors occupy in the file, each shared codebook counted once overall. */
function storedBytes(q: QuantizedModelFile, prefix: string, counted: Set<string>): number {
  const layer = q.layers[prefix];
  const names = layer.kind === "uniform"
    ? [`${prefix}.qweight`, `${prefix}.scales`, `${prefix}.zeros`]
    : [
      `${prefix}.scales`,
      ...(layer.channelOrder ? [`${prefix}.channel_order`] : []),
      ...layer.groups.flatMap((g) => g.stages.flatMap((s) => [s.indices, s.codebook])),
    ];
  let total = 0;
  for (const name of names) {
    if (counted.has(name)) continue;
    counted.add(name);
    total += q.file.info(name).byteLength;
  }
  return total;
}

Deno.test("packIndices round-trips widths 1 to 16", () => {
  const rng = new Rng(8);
  for (let bits = 1; bits <= 16; bits++) {
    for (const count of [1, 31, 32, 33, 100]) {
      const values = Uint32Array.from({ length: count }, () => rng.nextInt(2 ** bits));
      const words = packIndices(values, bits);
      assert.equal(words.byteLength, packedIndexBytes(count, bits));
      assert.deepEqual(unpackIndices(words, count, bits), values);
    }
  }
  assert.throws(() => packIndices([4], 2), RangeError);
});

Deno.test("quantizeModel bpw equals stored bytes", async () => {
  const model = await loadModel(STORIES_260K);
  const prefixes = linearPrefixes(model).slice(0, 7);
  const stats = syntheticStatistics(
    prefixes.map((prefix) => {
      const [rows, cols] = model.weights.shape(`${prefix}.weight`);
      return { prefix, rows, cols };
    }),
    new Rng(2),
  );
  const dir = await Deno.makeTempDir();
  // case table: method, bits, extra options
  const cases: [QuantizeOptions["method"], number, Partial<QuantizeOptions>][] = [
    ["rtn", 3, { groupSize: 48 }],
    ["gptq", 4, {}],
    ["kmeans", 2.5, { vectorLength: 6 }],
    ["vptq", 3, { residual: 16 }],
    ["rsavq", 24, { vectorLength: 8, codebookSize: 300 }],
    ["rsavq", 2, { vectorLength: 2, lambda: 0.1, edsgMode: "linear", fisherMetric: "empirical" }],
  ];
  try {
    for (const [method, bits, extra] of cases) {
      const out = `${dir}/${method}.safetensors`;
      const result = await quantizeModel(model, stats, {
        method,
        bits,
        out,
        layers: prefixes,
        quiet: true,
        gpu: null,
        iterations: 3,
        ...extra,
      });
      const q = await openQuantizedModel(out);
      const counted = new Set<string>();
      let bytes = 0, weights = 0;
      for (const layer of result.layers) {
        const stored = storedBytes(q, layer.prefix, counted);
        assert.equal(stored, layer.bytes.total, `${method} ${layer.prefix}`);
        // The file dequantizes to exactly the weights the quantizer measured its error on.
        const w = await model.weights.read(`${layer.prefix}.weight`);
        const fromFile = await q.weights.read(`${layer.prefix}.weight`);
        const layerStats = method === "rtn" || method === "kmeans"
          ? null
          : await stats.layer(layer.prefix);
        assert.equal(
          relativeError(w, fromFile, layer.rows, layer.cols, layerStats),
          layer.relativeError,
        );
        bytes += stored;
        weights += layer.rows * layer.cols;
      }
      assert.equal((bytes * 8) / weights, result.bpw, method);
      assert.equal(q.quantization.bpw, result.bpw);
      assert.ok(result.bpw <= bits);
      // Layers left out of `layers` stay dense and unchanged.
      const dense = "model.layers.1.self_attn.q_proj.weight";
      assert.deepEqual(await q.weights.read(dense), await model.weights.read(dense));
      q.weights.close();
    }
  } finally {
    model.weights.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dequantize(quantize(W)) reproduces W exactly", async () => {
  const config = tinyConfig({
    nLayers: 1,
    dim: 30,
    hiddenDim: 20,
    nHeads: 5,
    nKvHeads: 5,
    headDim: 6,
  });
  const rng = new Rng(13);
  const v = 4,
    pool = Array.from({ length: 9 }, () => Array.from({ length: v }, () => roundF16(rng.normal())));
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  tensors.set("model.embed_tokens.weight", {
    shape: [config.vocabSize, 30],
    data: Float32Array.from({ length: config.vocabSize * 30 }, () => rng.normal()),
  });
  const prefix = "model.layers.0.self_attn.q_proj";
  const rows = 30, cols = 30; // 30 columns: the last vector of each row is padded by 2
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const magnitude = 2 ** (r % 3);
    for (let c = 0; c < cols; c++) {
      w[r * cols + c] = magnitude * pool[(r + Math.floor(c / v)) % pool.length][c % v];
    }
  }
  tensors.set(`${prefix}.weight`, { shape: [rows, cols], data: w });
  const model = {
    path: "mem",
    format: "llama2c" as const,
    config,
    weights: new MemoryWeightStore("mem", tensors),
    tokenizer: null,
    chatTemplate: null,
  };
  // Count distinct scale-normalized vectors (padding included), the codebook size needed.
  const distinct = new Set<string>();
  for (let r = 0; r < rows; r++) {
    const s = rowScale(w.subarray(r * cols, (r + 1) * cols));
    for (let q = 0; q < Math.ceil(cols / v); q++) {
      distinct.add(
        Array.from({ length: v }, (_, d) => (q * v + d < cols ? w[r * cols + q * v + d] / s : 0))
          .join(),
      );
    }
  }
  const stats = syntheticStatistics([{ prefix, rows, cols }], new Rng(4));
  const dir = await Deno.makeTempDir();
  try {
    for (const method of ["kmeans", "vptq", "rsavq"] as const) {
      const out = `${dir}/${method}.safetensors`;
      await quantizeModel(model, stats, {
        method,
        bits: 16,
        codebookSize: distinct.size,
        vectorLength: v,
        out,
        layers: [prefix],
        quiet: true,
        gpu: null,
      });
      const loaded = await loadModel(out);
      assert.equal(loaded.format, "quantized");
      assert.deepEqual(await loaded.weights.read(`${prefix}.weight`), w, method);
      assert.deepEqual(loaded.weights.shape(`${prefix}.weight`), [rows, cols]);
      assert.ok(loaded.weights.names().includes("model.embed_tokens.weight"));
      loaded.weights.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openQuantizedModel rejects inconsistent files", async () => {
  const dir = await Deno.makeTempDir();
  const config = tinyConfig();
  try {
    const plain = `${dir}/plain.safetensors`;
    await writeSafetensors(plain, { x: { dtype: "F32", shape: [1], data: new Uint8Array(4) } });
    await assert.rejects(
      () => openQuantizedModel(plain),
      (e) => e instanceof FormatError && /format/.test(e.message),
    );
    const bad = `${dir}/bad.safetensors`;
    const layers = {
      "model.layers.0.self_attn.q_proj": {
        kind: "vq" as const,
        rows: 24,
        cols: 24,
        vectorLength: 4,
        channelOrder: false,
        groups: [{ start: 0, end: 24, stages: [{ codebook: "cb", size: 16, indices: "idx" }] }],
      },
    };
    await writeQuantizedModel(bad, {
      config,
      layers,
      quantization: {},
      tensors: {
        "model.layers.0.self_attn.q_proj.scales": {
          dtype: "F16",
          shape: [24],
          data: new Uint8Array(48),
        },
      },
    });
    await assert.rejects(
      () => openQuantizedModel(bad),
      (e) => e instanceof FormatError && e.field === "cb",
    );
    const file = await SafetensorsFile.open(bad);
    assert.equal(file.metadata.format, "rsavq-quantized");
    assert.equal(file.metadata.version, "2");
    file.close();

    // Version 1 stored channel orders as u32 per row: refused with the fix.
    const v1 = `${dir}/v1.safetensors`;
    await writeSafetensors(v1, { x: { dtype: "F32", shape: [1], data: new Uint8Array(4) } }, {
      format: "rsavq-quantized",
      version: "1",
    });
    await assert.rejects(
      () => openQuantizedModel(v1),
      (e) =>
        e instanceof FormatError && e.field === "__metadata__.version" &&
        /re-run deno task quantize/.test(e.message),
    );

    // A channel order stored unpacked (u32 per row, as version 1 did) does not match.
    const unpacked = `${dir}/unpacked.safetensors`;
    const p = "model.layers.0.self_attn.q_proj";
    const order = Uint32Array.from({ length: 24 }, (_, i) => 23 - i);
    const idx = packIndices(new Uint32Array(24 * 6), 4);
    await writeQuantizedModel(unpacked, {
      config,
      layers: {
        [p]: {
          ...layers[p],
          channelOrder: true,
          groups: [{ start: 0, end: 24, stages: [{ codebook: "cb", size: 16, indices: "idx" }] }],
        },
      },
      quantization: {},
      tensors: {
        [`${p}.scales`]: f16Tensor(new Float32Array(24), [24]),
        [`${p}.channel_order`]: u32Tensor(order, [24]),
        cb: f16Tensor(new Float32Array(16 * 4), [16, 4]),
        idx: u32Tensor(idx, [idx.length]),
      },
    });
    await assert.rejects(
      () => openQuantizedModel(unpacked),
      (e) =>
        e instanceof FormatError && e.field === `${p}.channel_order` &&
        /Expected U32 \[4\]/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openQuantizedModel reads a shared codebook", async () => {
  const config = tinyConfig({ nLayers: 1 });
  const rows = 4, cols = 6, v = 2, perRow = 3;
  const codebook = new Float32Array([0, 0, 1, 2, -1, 0.5, 3, -3]); // [4, 2]
  const scales = new Float32Array([1, 2, 0.5, 1]);
  const order = new Uint32Array([2, 0, 3, 1]);
  const idx = Uint32Array.from({ length: rows * perRow }, (_, i) => (i * 7) % 4);
  const tensors: Record<string, ReturnType<typeof f16Tensor>> = {
    shared: f16Tensor(codebook, [4, 2]),
  };
  const layers: Record<string, VqLayerDesc> = {};
  for (const which of ["q_proj", "k_proj"]) {
    const p = `model.layers.0.self_attn.${which}`;
    tensors[`${p}.scales`] = f16Tensor(scales, [rows]);
    const orderWords = packChannelOrder(order); // 4 rows: 2 bits each, one word
    tensors[`${p}.channel_order`] = u32Tensor(orderWords, [orderWords.length]);
    const words = packIndices(idx, 2);
    tensors[`${p}.indices.g0.s0`] = u32Tensor(words, [words.length]);
    layers[p] = {
      kind: "vq",
      rows,
      cols,
      vectorLength: v,
      channelOrder: true,
      groups: [{
        start: 0,
        end: rows,
        stages: [{ codebook: "shared", size: 4, indices: `${p}.indices.g0.s0` }],
      }],
    };
  }
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    await writeQuantizedModel(path, { config, layers, tensors, quantization: {} });
    const q = await openQuantizedModel(path);
    assert.ok(!q.weights.names().includes("shared"));
    const w = await q.weights.read("model.layers.0.self_attn.k_proj.weight");
    // Row order[p] contains scale * codebook[idx[p * 3 + c / 2]][c % 2].
    for (let p = 0; p < rows; p++) {
      for (let c = 0; c < cols; c++) {
        assert.equal(
          w[order[p] * cols + c],
          scales[order[p]] * codebook[idx[p * perRow + Math.floor(c / 2)] * 2 + (c % 2)],
        );
      }
    }
    assert.deepEqual(await q.weights.read("model.layers.0.self_attn.q_proj.weight"), w);
    q.weights.close();
  } finally {
    await Deno.remove(path);
  }
});
