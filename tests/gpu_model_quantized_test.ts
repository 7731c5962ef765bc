import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { BLOCK_LINEARS, expectedTensors, tensorNames } from "../src/model/config.ts";
import { GpuModel } from "../src/model/gpu_model.ts";
import { loadModel } from "../src/model/load.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { type LayerDesc, writeQuantizedModel } from "../src/formats/quantized.ts";
import type { TensorToWrite } from "../src/formats/safetensors.ts";
import { randomUniformLayer, randomVqLayer } from "./_quantized_layers.ts";
import { randomWeights, tinyConfig } from "./_helpers.ts";

Deno.test("GpuModel runs quantized files from their codes", async () => {
  const config = tinyConfig({
    dim: 32,
    hiddenDim: 48,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 8,
    vocabSize: 40,
  });
  const dense = randomWeights(config, 3);
  const tensors: Record<string, TensorToWrite> = {};
  const layers: Record<string, LayerDesc> = {};
  const expected = expectedTensors(config);
  let seed = 10;
  for (let l = 0; l < config.nLayers; l++) {
    for (const which of BLOCK_LINEARS) {
      const name = tensorNames.linear(l, which), prefix = name.replace(/\.weight$/, "");
      const [rows, cols] = expected.get(name)!;
      if (which === "mlp.down_proj") {
        const f = randomUniformLayer(
          { kind: "uniform", rows, cols, bits: 3, groupSize: 16 },
          seed++,
          prefix,
        );
        Object.assign(tensors, f.tensors);
        layers[prefix] = f.layer;
      } else {
        const half = Math.floor(rows / 2);
        const f = randomVqLayer(
          {
            rows,
            cols,
            vectorLength: 4,
            channelOrder: true,
            groups: [{ rows: half, sizes: [64, 16] }, { rows: rows - half, sizes: [256] }],
            codebookName: (_g, s, k) => `shared.s${s}.k${k}`,
          },
          seed++,
          prefix,
          tensors,
        );
        layers[prefix] = f.layer;
      }
    }
  }
  for (const name of dense.names()) {
    if (layers[name.replace(/\.weight$/, "")]) continue;
    const data = await dense.read(name);
    tensors[name] = { dtype: "F32", shape: dense.shape(name), data: new Uint8Array(data.buffer) };
  }
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  await writeQuantizedModel(path, { config, layers, tensors, quantization: {} });
  const model = await loadModel(path);
  assert.equal(model.format, "quantized");
  // the same model dequantized into a plain store runs the dense kernels
  const plain = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const name of model.weights.names()) {
    plain.set(name, { shape: model.weights.shape(name), data: await model.weights.read(name) });
  }
  const gpu = await GpuContext.create();
  const quantized = await GpuModel.create(gpu, config, model.weights);
  const reference = await GpuModel.create(gpu, config, new MemoryWeightStore("dequantized", plain));
  const tokens = [1, 5, 9, 30, 2, 7, 11, 39, 0, 3];
  for (const chunk of [tokens.slice(0, 7), tokens.slice(7)]) {
    const a = await quantized.forward(chunk), b = await reference.forward(chunk);
    let err = 0, max = 0;
    for (let i = 0; i < a.length; i++) {
      err = Math.max(err, Math.abs(a[i] - b[i]));
      max = Math.max(max, Math.abs(b[i]));
    }
    assert.ok(err / max < 1e-5, `relative logits difference ${err / max}`);
  }
  // the GPU stores the file's tensors as stored, except the channel orders, which it unpacks
  // to one u32 per row; that is still less than the file with its header and dense tensors
  assert.ok(quantized.weightBytes <= (await Deno.stat(path)).size);
  assert.ok(quantized.weightBytes < reference.weightBytes / 3);
  quantized.dispose();
  reference.dispose();
  gpu.destroy();
  model.weights.close();
  await Deno.remove(path);
});
