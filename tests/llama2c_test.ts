import assert from "node:assert/strict";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { argmax } from "../src/model/sampler.ts";
import { FormatError } from "../src/errors.ts";
import { STORIES_260K, STORIES_GREEDY_64 } from "./_helpers.ts";

Deno.test("loadLlama2c reads the stories260K header", async () => {
  const model = await loadLlama2c(STORIES_260K);
  try {
    const c = model.config;
    assert.deepEqual(
      [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.vocabSize, c.maxSeqLen],
      [64, 172, 5, 8, 4, 512, 512],
    );
    assert.equal(c.tiedEmbeddings, true);
    assert.equal(c.ropeStyle, "adjacent");
    assert.deepEqual(model.weights.shape("model.layers.4.mlp.down_proj.weight"), [64, 172]);
  } finally {
    model.weights.close();
  }
});

Deno.test("ReferenceModel greedy decoding matches run.c", async () => {
  const model = await loadLlama2c(STORIES_260K);
  const lm = await ReferenceModel.create(model.config, model.weights);
  model.weights.close();
  const ids: number[] = [];
  let token = 1;
  for (let i = 0; i < STORIES_GREEDY_64.length; i++) {
    token = argmax(lm.step(token));
    ids.push(token);
  }
  assert.deepEqual(ids, STORIES_GREEDY_64);
});

Deno.test("loadLlama2c rejects a truncated file", async () => {
  const bytes = await Deno.readFile(STORIES_260K);
  const path = await Deno.makeTempFile({ suffix: ".bin" });
  await Deno.writeFile(path, bytes.subarray(0, bytes.length - 100));
  await assert.rejects(() => loadLlama2c(path), (err: Error) => {
    assert.ok(err instanceof FormatError);
    assert.match(err.message, /truncated/);
    assert.ok(err.message.includes(path));
    return true;
  });
});

Deno.test("loadLlama2c rejects a header with non-dividing heads", async () => {
  const bytes = new Uint8Array(await Deno.readFile(STORIES_260K));
  new DataView(bytes.buffer).setInt32(16, 3, true); // n_kv_heads = 3 does not divide 8
  const path = await Deno.makeTempFile({ suffix: ".bin" });
  await Deno.writeFile(path, bytes);
  await assert.rejects(() => loadLlama2c(path), /nKvHeads/);
});

Deno.test("loadLlama2c reports NaN weights with the tensor name", async () => {
  const bytes = new Uint8Array(await Deno.readFile(STORIES_260K));
  new DataView(bytes.buffer).setFloat32(28 + 4 * 10, NaN, true); // inside the token embedding
  const path = await Deno.makeTempFile({ suffix: ".bin" });
  await Deno.writeFile(path, bytes);
  const model = await loadLlama2c(path);
  try {
    await assert.rejects(
      () => model.weights.read("model.embed_tokens.weight"),
      /embed_tokens.*NaN/,
    );
  } finally {
    model.weights.close();
  }
});

Deno.test("loadLlama2c serves concurrent reads correctly", async () => {
  const model = await loadLlama2c(STORIES_260K);
  try {
    const names = model.weights.names();
    const parallel = await Promise.all(names.map((n) => model.weights.read(n)));
    for (let i = 0; i < names.length; i++) {
      const serial = await model.weights.read(names[i]);
      assert.deepEqual(parallel[i], serial, names[i]);
    }
  } finally {
    model.weights.close();
  }
});
