import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { loadModel } from "../src/model/load.ts";
import { linearPrefixes, quantizeModel } from "../src/quantize/quantize_model.ts";
import { syntheticStatistics } from "../src/quantize/statistics.ts";
import { QUANT_METHODS } from "../src/quantize/types.ts";
import { quantizeRtnLayer } from "../src/quantize/rtn.ts";
import { quantizeGptqLayer } from "../src/quantize/gptq.ts";
import { Rng } from "../src/util/rng.ts";
import { STORIES_260K } from "./_helpers.ts";

async function storiesWithStats() {
  const model = await loadModel(STORIES_260K);
  const layers = linearPrefixes(model).map((prefix) => {
    const [rows, cols] = model.weights.shape(`${prefix}.weight`);
    return { prefix, rows, cols };
  });
  return { model, stats: syntheticStatistics(layers, new Rng(1)) };
}

Deno.test("quantizeModel runs every method on stories260K", async () => {
  const { model, stats } = await storiesWithStats();
  const dir = await Deno.makeTempDir();
  try {
    for (const method of QUANT_METHODS) {
      for (const bits of [2, 3]) {
        const out = `${dir}/${method}-${bits}.safetensors`;
        const result = await quantizeModel(model, stats, {
          method,
          bits,
          out,
          quiet: true,
          gpu: null,
          iterations: 4,
        });
        assert.equal(result.layers.length, 35, method);
        assert.ok(result.bpw <= bits, `${method} at ${bits}: ${result.bpw} bpw`);
        for (const layer of result.layers) {
          assert.ok(layer.bpw <= bits, `${method} ${layer.prefix}: ${layer.bpw} bpw`);
          assert.ok(
            layer.relativeError > 0 && layer.relativeError < 1,
            `${method} ${layer.prefix}: relative error ${layer.relativeError}`,
          );
        }
        const reloaded = await loadModel(out);
        assert.equal(reloaded.format, "quantized");
        assert.deepEqual(reloaded.config, model.config);
        reloaded.weights.close();
      }
    }
  } finally {
    model.weights.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantizeModel requires statistics for gptq, vptq, rsavq", async () => {
  const model = await loadModel(STORIES_260K);
  try {
    for (const method of ["gptq", "vptq", "rsavq"] as const) {
      await assert.rejects(
        () =>
          quantizeModel(model, null, {
            method,
            bits: 3,
            out: "/nonexistent/x.safetensors",
            quiet: true,
          }),
        /deno task calibrate/,
      );
    }
  } finally {
    model.weights.close();
  }
});

Deno.test("quantizeGptqLayer feeds errors back through A", async () => {
  const { model, stats } = await storiesWithStats();
  try {
    const prefix = "model.layers.1.mlp.down_proj";
    const [rows, cols] = model.weights.shape(`${prefix}.weight`);
    const w = await model.weights.read(`${prefix}.weight`);
    const options = { bits: 3, groupSize: 64, damp: 0.01 };
    const identity = new Float32Array(cols * cols);
    for (let j = 0; j < cols; j++) identity[j * cols + j] = 1 + (j % 3);
    const rtn = quantizeRtnLayer(prefix, w, rows, cols, options);
    assert.deepEqual(
      quantizeGptqLayer(prefix, w, rows, cols, identity, options).dequantized,
      rtn.dequantized,
    );
    const a = (await stats.layer(prefix)).A;
    const outputError = (q: Float32Array) => {
      let total = 0;
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < cols; i++) {
          let s = 0;
          for (let j = 0; j < cols; j++) s += a[i * cols + j] * (q[r * cols + j] - w[r * cols + j]);
          total += (q[r * cols + i] - w[r * cols + i]) * s;
        }
      }
      return total;
    };
    const gptq = quantizeGptqLayer(prefix, w, rows, cols, a, options);
    assert.ok(
      outputError(gptq.dequantized) < 0.8 * outputError(rtn.dequantized),
      `GPTQ ${outputError(gptq.dequantized)} vs RTN ${outputError(rtn.dequantized)}`,
    );
  } finally {
    model.weights.close();
  }
});

Deno.test("quantizeModel agrees on GPU and CPU", async () => {
  const { model, stats } = await storiesWithStats();
  const gpu = await GpuContext.create();
  const dir = await Deno.makeTempDir();
  try {
    const layers = ["model.layers.2.self_attn.v_proj", "model.layers.2.mlp.down_proj"];
    const run = (gpuUse: "always" | "never") =>
      quantizeModel(model, stats, {
        method: "rsavq",
        bits: 3,
        residual: 8,
        lambda: 0.1,
        layers,
        out: `${dir}/${gpuUse}.safetensors`,
        quiet: true,
        gpu,
        gpuUse,
        iterations: 3,
      });
    const onGpu = await run("always"), onCpu = await run("never");
    for (let i = 0; i < layers.length; i++) {
      assert.deepEqual(onGpu.layers[i].bytes, onCpu.layers[i].bytes);
      // Seeding and Lloyd take the same path on both, so the errors differ only by f32 rounding.
      const [a, b] = [onGpu.layers[i].relativeError, onCpu.layers[i].relativeError];
      assert.ok(Math.abs(a - b) < 0.05 * b, `${layers[i]}: ${a} on GPU vs ${b} in TypeScript`);
    }
  } finally {
    gpu.destroy();
    model.weights.close();
    await Deno.remove(dir, { recursive: true });
  }
});
