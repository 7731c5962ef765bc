import assert from "node:assert/strict";
import { Tokenizer as LibTokenizer } from "@huggingface/tokenizers";
import { bpeTokenizerJson, BYTE_TO_CHAR, END_OF_TEXT, trainBpe } from "../src/train/bpe_trainer.ts";
import { loadNpmCorpus, loadTextFiles, splitHeldOut } from "../src/data/corpus.ts";
import { HfTokenizer } from "../src/tokenizer/hf_tokenizer.ts";
import { UsageError } from "../src/errors.ts";

/** First chapters of Moby Dick from the npm corpus: real English for the trainer. */
async function mobyChapters(): Promise<string[]> {
  const docs = await loadNpmCorpus();
  return docs.filter((d) => /^moby-dick\/[1-9]$/.test(d.id)).map((d) => d.text);
}

/** Strings that exercise every byte path: accents, CJK, emoji, tabs, runs of spaces, CR LF. */
const ROUND_TRIP_CASES = [
  "Call me Ishmael. Some years ago—never mind how long precisely—having little money.",
  "  leading and trailing spaces  \n\n\ttabs\tand\r\nCR LF\n",
  "Naïve café façade, Ærøskøbing, 東京 and 😀👍🏽 emoji; 'quotes' \"double\" it's we'll",
  "numbers 1234567890 3.14159 and symbols ~!@#$%^&*()_+{}|:<>?",
  "",
];

Deno.test("trainBpe writes a tokenizer.json that @huggingface/tokenizers loads at the requested size", async () => {
  const texts = await mobyChapters();
  for (const vocabSize of [300, 700]) {
    const json = bpeTokenizerJson(trainBpe(texts, { vocabSize, quiet: true }));
    const lib = new LibTokenizer(json, {});
    const ids = [...lib.get_vocab(true).values()];
    assert.equal(ids.length, vocabSize);
    assert.equal(Math.max(...ids), vocabSize - 1);
    assert.equal(lib.token_to_id(END_OF_TEXT), 0);
    const tok = HfTokenizer.fromJson(
      json,
      { bos_token: END_OF_TEXT, eos_token: END_OF_TEXT },
      "mem",
    );
    assert.equal(tok.vocabSize, vocabSize);
    assert.equal(tok.bosId, 0);
  }
});

Deno.test("trainBpe tokenizer round-trips text exactly, unseen bytes included", async () => {
  const json = bpeTokenizerJson(trainBpe(await mobyChapters(), { vocabSize: 600, quiet: true }));
  const tok = HfTokenizer.fromJson(json, {}, "mem");
  for (const text of ROUND_TRIP_CASES) {
    const ids = tok.encode(text);
    assert.ok(
      ids.every((id) => id > 0 && id < 600),
      `special or out-of-range id in ${JSON.stringify(text)}`,
    );
    assert.equal(tok.decode(ids), text);
  }
  // The merges compress English it was not trained on (chapter 10; measured 2.32 characters a token, bytes alone give 1).
  const unseen = (await loadNpmCorpus()).find((d) => d.id === "moby-dick/10")!.text;
  const perToken = unseen.length / tok.encode(unseen).length;
  assert.ok(perToken > 2, `${perToken.toFixed(2)} characters per token`);
});

Deno.test("trainBpe merges the most frequent pair first and breaks ties by string order", () => {
  // Pairs (a,t), (h,e) and (t,h) all occur 3 times. "a" sorts first, so "at" is merged first.
  // Then "he" (3 times) wins, and then "the", because (t,he) occurs 3 times and (Ġ,t) twice.
  const bpe = trainBpe(["the cat the hat the bat"], { vocabSize: 260, quiet: true });
  assert.deepEqual(bpe.merges, [["a", "t"], ["h", "e"], ["t", "he"]]);
  assert.deepEqual(bpe.vocab.slice(257), ["at", "he", "the"]);
  assert.equal(bpe.vocab[0], END_OF_TEXT);
  assert.equal(bpe.vocab[1 + 0x41], "A");
  assert.equal(bpe.vocab[1 + 0x20], BYTE_TO_CHAR[0x20]);
});

Deno.test("trainBpe is deterministic and independent of document order", async () => {
  const texts = await mobyChapters();
  const a = JSON.stringify(bpeTokenizerJson(trainBpe(texts, { vocabSize: 400, quiet: true })));
  const b = JSON.stringify(
    bpeTokenizerJson(trainBpe([...texts].reverse(), { vocabSize: 400, quiet: true })),
  );
  assert.equal(a, b);
});

Deno.test("trainBpe rejects a size below the base alphabet or out of the text's reach", () => {
  assert.throws(
    () => trainBpe(["abc"], { vocabSize: 200, quiet: true }),
    (e) => e instanceof UsageError && /at least 257/.test(e.message),
  );
  assert.throws(
    () => trainBpe(["ab ab"], { vocabSize: 300, quiet: true }),
    (e) => e instanceof UsageError && /out of reach/.test(e.message),
  );
});

Deno.test("loadNpmCorpus and splitHeldOut give a fixed, disjoint held-out split", async () => {
  const docs = await loadNpmCorpus();
  assert.equal(docs.length, 139 + 233);
  assert.equal(new Set(docs.map((d) => d.id)).size, docs.length);
  const a = splitHeldOut(docs), b = splitHeldOut([...docs].reverse());
  assert.deepEqual(a.heldOut.map((d) => d.id).sort(), b.heldOut.map((d) => d.id).sort());
  const heldOutIds = new Set(a.heldOut.map((d) => d.id));
  assert.ok(a.train.every((d) => !heldOutIds.has(d.id)));
  assert.equal(a.train.length + a.heldOut.length, docs.length);
  // About 5% of the documents, from both sources.
  assert.ok(a.heldOut.length >= 10, `${a.heldOut.length} held out`);
  assert.ok(a.heldOut.length <= 35, `${a.heldOut.length} held out`);
  assert.ok(
    a.heldOut.some((d) => d.id.startsWith("moby-dick/")) &&
      a.heldOut.some((d) => d.id.startsWith("sotu/")),
  );
});

Deno.test("loadTextFiles cuts a file into paragraph documents and names a missing file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const paragraph = "word ".repeat(1000).trim(); // 4999 characters
    await Deno.writeTextFile(
      `${dir}/a.txt`,
      [paragraph, paragraph, paragraph, paragraph].join("\r\n\r\n"),
    );
    const docs = await loadTextFiles([`${dir}/a.txt`]);
    assert.deepEqual(docs.map((d) => d.id), [`${dir}/a.txt#0`, `${dir}/a.txt#1`]);
    assert.ok(docs.every((d) => !d.text.includes("\r")));
    await assert.rejects(
      () => loadTextFiles([`${dir}/missing.txt`]),
      (e) => e instanceof UsageError && e.message.includes("missing.txt"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
