import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { GpuBackward } from "../src/model/gpu_backward.ts";
import { ReferenceBackward } from "../src/model/reference_backward.ts";
import { expectedTensors } from "../src/model/config.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { Rng } from "../src/util/rng.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "./_helpers.ts";

/** Max |got - want| relative to max |want|, per tensor. */
function relativeError(got: Float32Array, want: Float64Array): number {
  let scale = 0, worst = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  return scale === 0 ? worst : worst / scale;
}

const ODD = {
  dim: 13,
  hiddenDim: 17,
  vocabSize: 19,
  nHeads: 3,
  nKvHeads: 1,
  headDim: 4,
  nLayers: 2,
};
const VARIANTS = [
  {
    label: "adjacent rope, untied head",
    overrides: { ropeStyle: "adjacent" as const, tiedEmbeddings: false, qkvBias: false },
  },
  {
    label: "half rope, tied head, qkv bias",
    overrides: { ropeStyle: "half" as const, tiedEmbeddings: true, qkvBias: true },
  },
];

for (const { label, overrides } of VARIANTS) {
  Deno.test(`GpuBackward weight gradients match the f64 reference (${label})`, async () => {
    const config = tinyConfig({ ...ODD, ...overrides });
    const weights = randomWeights(config, 21);
    const ref = await ReferenceBackward.create(config, weights);
    const gpu = await GpuContext.create();
    // 3-row chunks split every weight matrix, so chunked products are exercised
    const pass = await GpuBackward.create(gpu, config, weights, { maxChunkBytes: 3 * 17 * 4 });
    // the transposed head (2-row chunks of 19 floats) takes the other head-gradient path
    const passT = await GpuBackward.create(gpu, config, weights, {
      maxChunkBytes: 3 * 17 * 4,
      transposedHead: true,
    });
    try {
      const rng = new Rng(22);
      const tokens = Array.from({ length: 11 }, () => rng.nextInt(config.vocabSize));
      const want = ref.backward(tokens);
      for (const [mode, p] of [["row head", pass], ["transposed head", passT]] as const) {
        const got = await p.run(tokens, { weightGrads: true });
        assert.ok(
          Math.abs(got.loss - want.loss) < 1e-5 * want.loss,
          `${mode}: loss ${got.loss} vs ${want.loss}`,
        );
        for (const name of expectedTensors(config).keys()) {
          const err = relativeError(got.grads!.get(name)!, want.grads.get(name)!);
          assert.ok(err < 1e-3, `${mode}: ${name}: relative error ${err.toExponential(2)}`);
        }
      }
    } finally {
      pass.dispose();
      passT.dispose();
      gpu.destroy();
    }
  });
}

Deno.test("GpuBackward matches the reference on stories260K at 130 tokens", async () => {
  const model = await loadLlama2c(STORIES_260K);
  const ref = await ReferenceBackward.create(model.config, model.weights);
  const gpu = await GpuContext.create();
  const pass = await GpuBackward.create(gpu, model.config, model.weights);
  model.weights.close();
  try {
    const rng = new Rng(23);
    // T = 130 crosses two 64-wide workgroups in the row kernels
    const tokens = [1, ...Array.from({ length: 129 }, () => rng.nextInt(512))];
    const want = ref.backward(tokens);
    const got = await pass.run(tokens, { weightGrads: true });
    assert.ok(
      Math.abs(got.loss - want.loss) < 1e-5 * want.loss,
      `loss ${got.loss} vs ${want.loss}`,
    );
    for (const [name, g] of want.grads) {
      const err = relativeError(got.grads!.get(name)!, g);
      assert.ok(err < 1e-3, `${name}: relative error ${err.toExponential(2)}`);
    }
    // a second sequence of another length reallocates and still agrees
    const short = tokens.slice(0, 17);
    const again = await pass.run(short);
    assert.ok(Math.abs(again.loss - ref.loss(short)) < 1e-5 * again.loss);
    // the forward-only mode gives the same loss
    const forwardOnly = await pass.run(tokens, { lossOnly: true });
    assert.equal(forwardOnly.grads, undefined);
    assert.ok(
      Math.abs(forwardOnly.loss - want.loss) < 1e-5 * want.loss,
      `lossOnly ${forwardOnly.loss} vs ${want.loss}`,
    );
    await assert.rejects(() => pass.run(tokens, { lossOnly: true, weightGrads: true }), /lossOnly/);
  } finally {
    pass.dispose();
    gpu.destroy();
  }
});

Deno.test("GpuBackward rejects a token outside the vocabulary", async () => {
  const config = tinyConfig(ODD);
  const gpu = await GpuContext.create();
  const pass = await GpuBackward.create(gpu, config, randomWeights(config, 3));
  try {
    await assert.rejects(() => pass.run([1, 19]), /Token id 19 at position 1/);
  } finally {
    pass.dispose();
    gpu.destroy();
  }
});
