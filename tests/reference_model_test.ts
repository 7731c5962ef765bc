import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel } from "../src/model/load.ts";
import { createCausalLM } from "../src/eval/engine.ts";
import { generate } from "../src/model/generate.ts";
import { loadNpmCorpus, splitHeldOut } from "../src/data/corpus.ts";
import { REFERENCE_MODEL } from "./_helpers.ts";

const REFERENCE = REFERENCE_MODEL;

Deno.test("the shipped reference model stays under 16 MB and its card states its training", async () => {
  let bytes = 0;
  for await (const entry of Deno.readDir(REFERENCE)) {
    bytes += (await Deno.stat(join(REFERENCE, entry.name))).size;
  }
  assert.ok(bytes < 16 * 1024 * 1024, `${bytes} bytes`);
  const card = await Deno.readTextFile(join(REFERENCE, "README.md"));
  for (const fact of [/deno task train/, /Moby Dick/, /State of the Union/, /wall time/]) {
    assert.match(card, fact);
  }
  const stated = Number(card.match(/Final: loss [\d.]+, perplexity ([\d.]+)/)?.[1]);
  assert.ok(stated > 1, `held-out perplexity ${stated} in the card`);
  assert.ok(stated < 2048, `held-out perplexity ${stated} in the card`);
  const model = await loadModel(REFERENCE);
  const params = model.weights.names().length;
  assert.ok(params > 0);
  assert.ok(model.tokenizer !== null, "the model ships its tokenizer");
  model.weights.close();
});

Deno.test("the shipped reference model generates recognizable English", async () => {
  const model = await loadModel(REFERENCE);
  const tokenizer = model.tokenizer!;
  const lm = await createCausalLM(model, "reference");
  const prompt = tokenizer.encode("The ship sailed", { addBos: true });
  const { tokens } = await generate(lm, prompt, {
    maxTokens: 80,
    temperature: 0.5,
    seed: 1,
    stopIds: [],
  });
  const text = tokenizer.decode(tokens);
  const words = text.toLowerCase().match(/[a-z]+/g) ?? [];
  // a word is recognizable when it occurs in the training text
  const { train } = splitHeldOut(await loadNpmCorpus());
  const known = new Set(train.flatMap((d) => d.text.toLowerCase().match(/[a-z]+/g) ?? []));
  const recognized = words.filter((w) => known.has(w)).length / words.length;
  assert.ok(words.length >= 30, `only ${words.length} words: ${text}`);
  assert.ok(recognized >= 0.9, `${(recognized * 100).toFixed(0)}% known words: ${text}`);
  assert.ok(new Set(words).size >= 15, `repetitive: ${text}`);
  model.weights.close();
});
