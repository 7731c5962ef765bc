import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  type CorpusDocument,
  loadNpmCorpus,
  sampleCorpusText,
  splitHeldOut,
} from "../src/data/corpus.ts";
import { corpusChoiceQuestions } from "../src/data/corpus_choice_tasks.ts";
import { parseChoiceTasks } from "../src/data/choice_tasks.ts";
import { readCorpusTokens } from "../src/data/token_files.ts";
import { loadModel } from "../src/model/load.ts";
import { UsageError } from "../src/errors.ts";
import { REFERENCE_MODEL } from "./_helpers.ts";

/** Documents of numbered paragraphs, so every chunk names its source. */
function numberedDocs(docs: number, paragraphs: number): CorpusDocument[] {
  return Array.from({ length: docs }, (_, d) => ({
    id: `doc${d}`,
    text: Array.from({ length: paragraphs }, (_, p) => `doc${d} paragraph ${p}.`).join("\n\n"),
  }));
}

Deno.test("sampleCorpusText takes first chunks of every document before second chunks", () => {
  const docs = numberedDocs(5, 6);
  const text = sampleCorpusText(docs, { seed: 3, chars: 1e6, chunkChars: 30 });
  const paragraphs = text.split("\n\n");
  assert.equal(paragraphs.length, 30, "every paragraph once when chars is large");
  // a chunk of at least 30 characters contains two 17-character paragraphs, so the first five chunks are the
  // first two paragraphs of each document
  const firstRound = paragraphs.slice(0, 10).map((p) => p.replace(/^doc\d+ /, ""));
  assert.deepEqual(new Set(firstRound), new Set(["paragraph 0.", "paragraph 1."]));
  const docOrder = paragraphs.slice(0, 10).filter((_, i) => i % 2 === 0).map((p) => p.slice(0, 4));
  assert.equal(new Set(docOrder).size, 5, "one chunk from each document in the first round");
});

Deno.test("sampleCorpusText stops after the chunk that reaches chars and depends on the seed", () => {
  const docs = numberedDocs(8, 4);
  const a = sampleCorpusText(docs, { seed: 1, chars: 100, chunkChars: 10 });
  assert.ok(a.length >= 100, `length ${a.length}`);
  assert.ok(a.length < 100 + 40, `length ${a.length}`);
  assert.equal(sampleCorpusText(docs, { seed: 1, chars: 100, chunkChars: 10 }), a);
  assert.notEqual(sampleCorpusText(docs, { seed: 2, chars: 100, chunkChars: 10 }), a);
});

Deno.test("corpusChoiceQuestions: the right choice continues its source and the wrong ones do not", async () => {
  const { heldOut } = splitHeldOut(await loadNpmCorpus());
  const lines = corpusChoiceQuestions(heldOut, { seed: 5, perTask: 40 });
  assert.equal(lines.length, 80);
  assert.deepEqual(
    lines.map((l) => l.task),
    [...Array(40).fill("next-sentence"), ...Array(40).fill("next-word")],
  );
  const flat = new Map(heldOut.map((d) => [d.id, d.text.replace(/\s+/g, " ")]));
  for (const l of lines) {
    assert.equal(l.choices.length, 4);
    assert.equal(new Set(l.choices).size, 4, `repeated choice in ${JSON.stringify(l)}`);
    assert.ok(l.answer >= 0);
    assert.ok(l.answer < 4);
    assert.ok(!l.context.endsWith(" "));
    assert.ok(l.context.length > 0);
    const source = flat.get(l.source)!;
    assert.ok(source.includes(`${l.context} ${l.choices[l.answer]}`), `answer of ${l.context}`);
  }
  // the right choices are spread over the four positions
  const positions = new Set(lines.map((l) => l.answer));
  assert.equal(positions.size, 4);
  assert.deepEqual(corpusChoiceQuestions(heldOut, { seed: 5, perTask: 40 }), lines);
});

Deno.test("bench/tasks/corpus_heldout.jsonl is what bench/write_corpus_tasks.ts writes", async () => {
  const path = fileURLToPath(new URL("../bench/tasks/corpus_heldout.jsonl", import.meta.url));
  const file = await Deno.readTextFile(path);
  const { heldOut } = splitHeldOut(await loadNpmCorpus());
  const expected = corpusChoiceQuestions(heldOut, { seed: 1, perTask: 200 });
  assert.equal(file, expected.map((l) => JSON.stringify(l)).join("\n") + "\n");
  const parsed = parseChoiceTasks(file, path);
  assert.equal(parsed.questions.length, 400);
  assert.ok(parsed.questions.every((q) => q.layout === "native"));
  for (const line of expected) assert.equal(new Set(line.choices).size, 4, line.context);
  assert.deepEqual(
    new Set(parsed.questions.map((q) => q.task)),
    new Set(["next-sentence", "next-word"]),
  );
});

Deno.test("readCorpusTokens encodes held-out documents or a seeded sample", async () => {
  const model = await loadModel(REFERENCE_MODEL);
  const source = { vocabSize: model.config.vocabSize, tokenizer: model.tokenizer };
  const { heldOut } = splitHeldOut(await loadNpmCorpus());
  const whole = await readCorpusTokens({ ...source, part: "held-out" });
  assert.equal(whole.length, heldOut.length);
  assert.ok(whole.every((doc) => doc[0] === model.config.bosId));
  const sampled = await readCorpusTokens({ ...source, part: "train", tokens: 512, seed: 3 });
  assert.equal(sampled.length, 1);
  assert.ok(sampled[0].length >= 512, `${sampled[0].length} tokens`);
  const again = await readCorpusTokens({ ...source, part: "train", tokens: 512, seed: 3 });
  assert.deepEqual(again, sampled);
  model.weights.close();
});

Deno.test("readCorpusTokens rejects a model without a tokenizer", async () => {
  await assert.rejects(
    () => readCorpusTokens({ vocabSize: 512, tokenizer: null, part: "held-out" }),
    (err: Error) => err instanceof UsageError && /no tokenizer/.test(err.message),
  );
});

Deno.test("corpusChoiceQuestions rejects text from a single document", () => {
  const text = Array.from({ length: 12 }, (_, i) => `Sentence number ${i} says a plain thing here.`)
    .join(" ");
  assert.throws(
    () => corpusChoiceQuestions([{ id: "only", text }], { seed: 1, perTask: 2 }),
    (err: Error) => err instanceof UsageError && /other documents/.test(err.message),
  );
});
