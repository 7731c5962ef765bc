import assert from "node:assert/strict";
import { ReferenceBackward } from "../src/model/reference_backward.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { readAllWeights } from "../src/model/model.ts";
import { expectedTensors } from "../src/model/config.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { Rng } from "../src/util/rng.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "./_helpers.ts";
import { assertGradient, sampleIndices } from "./backward_fd.ts";

// Odd widths: dim 13, hidden 17, vocab 19, three query heads sharing one key/value head.
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
  Deno.test(`ReferenceBackward weight gradients match finite differences (${label})`, async () => {
    const config = tinyConfig({ ...ODD, ...overrides });
    const ref = await ReferenceBackward.create(config, randomWeights(config, 5));
    const rng = new Rng(6);
    const tokens = Array.from({ length: 7 }, () => rng.nextInt(config.vocabSize));
    const { grads } = ref.backward(tokens);
    const names = [...expectedTensors(config).keys()];
    assert.deepEqual([...grads.keys()].sort(), [...names].sort(), "a gradient for every tensor");
    for (const name of names) {
      const w = ref.weights.get(name)!;
      assertGradient(name, w, grads.get(name)!, () => ref.loss(tokens), {
        indices: sampleIndices(w.length, 12, rng),
        tol: 1e-6,
      });
    }
  });
}

Deno.test("ReferenceBackward taps give g = dy^T x for every linear", async () => {
  const config = tinyConfig(ODD);
  const ref = await ReferenceBackward.create(config, randomWeights(config, 7));
  const tokens = [1, 2, 3, 5, 8, 13, 2];
  const seen: string[] = [];
  const taps = new Map<string, Float64Array>();
  const { grads } = ref.backward(tokens, {
    onLinear: (tap) => {
      const name = `model.layers.${tap.layer}.${tap.linear}.weight`;
      seen.push(name);
      assert.equal(tap.dw.length, tap.outDim * tap.inDim);
      // dw equals the sum over tokens of dy_t x_t^T
      let sum = 0;
      for (let t = 0; t < tap.T; t++) sum += tap.dy[t * tap.outDim + 1] * tap.x[t * tap.inDim + 2];
      assert.ok(Math.abs(sum - tap.dw[tap.inDim + 2]) < 1e-12, name);
      taps.set(name, tap.dw);
      for (let o = 0; o < tap.outDim; o++) {
        assert.ok(tap.dy[(tap.T - 1) * tap.outDim + o] === 0, `${name}: last position has no loss`);
      }
    },
  });
  assert.equal(seen.length, config.nLayers * 7);
  for (const name of seen) assert.deepEqual(taps.get(name), grads.get(name), name);
});

Deno.test("ReferenceBackward logits agree with ReferenceModel on stories260K", async () => {
  const model = await loadLlama2c(STORIES_260K);
  const weights = await readAllWeights(model.weights);
  model.weights.close();
  const ref = await ReferenceBackward.create(model.config, weights);
  const lm = await ReferenceModel.create(model.config, weights);
  const tokens = [1, 461, 401, 378, 455, 473, 456, 435, 299];
  const expected = await lm.forward(tokens);
  const got = ref.logits(tokens);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(expected[i] - got[i]));
  assert.ok(worst < 1e-3, `max logit difference ${worst}`);
});

Deno.test("ReferenceBackward rejects a token outside the vocabulary", async () => {
  const config = tinyConfig(ODD);
  const ref = await ReferenceBackward.create(config, randomWeights(config, 7));
  assert.throws(() => ref.backward([1, 19, 2]), /Token id 19 at position 1/);
  assert.throws(() => ref.backward([1]), /between 2 and/);
});
