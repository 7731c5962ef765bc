import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { GpuGradientEngine } from "../src/train/gpu_gradient_engine.ts";
import { ReferenceGradientEngine } from "../src/train/gradient_engine.ts";
import { initParams, train } from "../src/train/trainer.ts";
import { tinyConfig } from "./_helpers.ts";

/** Max |got - want| over max |want|. */
function relativeError(got: Float32Array, want: Float32Array): number {
  let scale = 0, worst = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  return scale === 0 ? worst : worst / scale;
}

const CONFIG = tinyConfig({
  ropeStyle: "half",
  tiedEmbeddings: true,
  qkvBias: false,
  vocabSize: 41,
});

/** Two deterministic sequences of 9 token ids, varied by `seed`. */
function sequences(seed: number): Int32Array[] {
  return [0, 1].map((b) =>
    Int32Array.from({ length: 9 }, (_, t) => (seed * 7 + b * 13 + t * t * 5) % CONFIG.vocabSize)
  );
}

Deno.test("GpuGradientEngine batch gradients match the reference engine, before and after setWeights", async () => {
  const gpu = await GpuContext.create();
  const params = initParams(CONFIG, 4);
  for (const p of params.values()) for (let i = 0; i < p.length; i++) p[i] *= 10; // larger weights, larger gradients
  const engine = await GpuGradientEngine.create(gpu, CONFIG, params);
  const ref = await ReferenceGradientEngine.create(CONFIG, params);
  try {
    for (const round of [0, 1]) {
      if (round === 1) {
        // new weights: every tensor scaled, written into the pass's existing buffers
        for (const p of params.values()) for (let i = 0; i < p.length; i++) p[i] *= 0.7;
        await engine.setWeights(params);
        await ref.setWeights(params);
      }
      const batch = sequences(round);
      const got = await engine.gradients(batch), want = await ref.gradients(batch);
      assert.ok(
        Math.abs(got.loss - want.loss) < 1e-4 * Math.max(1, want.loss),
        `round ${round}: loss ${got.loss} vs ${want.loss}`,
      );
      assert.ok(Math.abs((await engine.loss(batch)) - want.loss) < 1e-4 * Math.max(1, want.loss));
      assert.deepEqual([...got.grads.keys()].sort(), [...want.grads.keys()].sort());
      for (const [name, g] of want.grads) {
        const err = relativeError(got.grads.get(name)!, g);
        assert.ok(err < 1e-3, `round ${round}: ${name} relative error ${err}`);
      }
    }
  } finally {
    engine.dispose();
    gpu.destroy();
  }
});

Deno.test("train on GpuGradientEngine follows the reference engine's loss curve", async () => {
  const gpu = await GpuContext.create();
  const stream = Int32Array.from({ length: 400 }, (_, i) => (i * i + 3 * i) % CONFIG.vocabSize);
  const data = { train: stream, heldOut: stream.slice(0, 64), bosId: 0 };
  const options = {
    steps: 6,
    batchSize: 2,
    seqLen: 12,
    seed: 2,
    lr: 1e-2,
    warmup: 2,
    evalEvery: 0,
    evalWindows: 2,
    quiet: true,
  };
  const pGpu = initParams(CONFIG, 5), pRef = initParams(CONFIG, 5);
  const engine = await GpuGradientEngine.create(gpu, CONFIG, pGpu);
  try {
    const a = await train(engine, pGpu, data, options);
    const b = await train(await ReferenceGradientEngine.create(CONFIG, pRef), pRef, data, options);
    for (let s = 0; s < 6; s++) {
      assert.ok(
        Math.abs(a.history.train[s][1] - b.history.train[s][1]) < 1e-3,
        `step ${s + 1}: ${a.history.train[s][1]} vs ${b.history.train[s][1]}`,
      );
    }
  } finally {
    engine.dispose();
    gpu.destroy();
  }
});
