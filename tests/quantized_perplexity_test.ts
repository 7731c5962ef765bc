import assert from "node:assert/strict";
import { join } from "node:path";
import { GpuContext } from "../src/gpu/device.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { loadModel } from "../src/model/load.ts";
import { GpuModel } from "../src/model/gpu_model.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { quantizeModel } from "../src/quantize/quantize_model.ts";
import { sampleTokenStream } from "../src/data/sample_stream.ts";
import { evaluate } from "../src/eval/evaluate.ts";
import { STORIES_260K } from "./_helpers.ts";

Deno.test("quantized kernels give the dequantized model's perplexity", async () => {
  const dir = await Deno.makeTempDir();
  const gpu = await GpuContext.create();
  try {
    // k-means VQ at about 2 bpw needs no calibration statistics.
    const source = await loadLlama2c(STORIES_260K);
    const out = join(dir, "stories-2bit.safetensors");
    const result = await quantizeModel(source, null, {
      method: "kmeans",
      bits: 2,
      out,
      seed: 3,
      gpu: null,
      quiet: true,
    });
    source.weights.close();
    assert.ok(result.bpw <= 2, `bpw ${result.bpw} exceeds the target`);
    assert.ok(result.bpw > 1.5, `bpw ${result.bpw} is far below the target`);

    // Held-out stream sampled from the full model: 4 windows of 128 tokens.
    const full = await loadLlama2c(STORIES_260K);
    const fullLm = await ReferenceModel.create(full.config, full.weights);
    full.weights.close();
    const tokens = await sampleTokenStream(fullLm, { tokens: 512, windowLength: 128, seed: 11 });

    // Perplexity from the packed codes, through the quantized matvec/matmul kernels.
    const quantized = await loadModel(out);
    const packedLm = await GpuModel.create(gpu, quantized.config, quantized.weights, {
      contextLength: 128,
    });
    const packed = await evaluate(packedLm, tokens, { ctx: 128 });
    const weightBytes = packedLm.weightBytes;
    packedLm.dispose();

    // Perplexity of the same weights dequantized to dense f32.
    const dense = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const name of quantized.weights.names()) {
      dense.set(name, {
        shape: quantized.weights.shape(name),
        data: await quantized.weights.read(name),
      });
    }
    quantized.weights.close();
    const denseLm = await GpuModel.create(
      gpu,
      quantized.config,
      new MemoryWeightStore("dequantized", dense),
      { contextLength: 128 },
    );
    const reference = await evaluate(denseLm, tokens, { ctx: 128 });
    denseLm.dispose();

    assert.equal(packed.tokens, reference.tokens);
    const relative = Math.abs(packed.ppl - reference.ppl) / reference.ppl;
    assert.ok(
      relative < 1e-4,
      `ppl ${packed.ppl} vs dequantized ${reference.ppl}: relative ${relative}`,
    );
    const fileBytes = (await Deno.stat(out)).size;
    assert.ok(
      weightBytes <= fileBytes,
      `GPU weight bytes ${weightBytes} exceed the file's ${fileBytes}`,
    );
  } finally {
    gpu.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});
