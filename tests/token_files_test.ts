import assert from "node:assert/strict";
import { readTokenFile, tokenFileKind } from "../src/data/token_files.ts";
import { FormatError, UsageError } from "../src/errors.ts";
import type { Tokenizer } from "../src/tokenizer/tokenizer.ts";

/** Writes `content` to a fresh temporary file with `suffix` and returns its path. */
async function tempFile(suffix: string, content: string | Uint8Array): Promise<string> {
  const path = await Deno.makeTempFile({ suffix });
  if (typeof content === "string") await Deno.writeTextFile(path, content);
  else await Deno.writeFile(path, content);
  return path;
}

/** Raw little-endian uint32 bytes of `ids`. */
function u32Bytes(ids: number[]): Uint8Array {
  const bytes = new Uint8Array(4 * ids.length);
  const view = new DataView(bytes.buffer);
  ids.forEach((id, i) => view.setUint32(4 * i, id, true));
  return bytes;
}

/** Creates a character-level tokenizer: id = char code - 95, so "a" is 2, "b" is 3 and "z" is 27. */
function charTokenizer(bosId: number | undefined): Tokenizer {
  return {
    vocabSize: 40,
    bosId,
    eosIds: [],
    encode: (text, options) => {
      const ids = [...text].map((ch) => ch.charCodeAt(0) - 95);
      return options?.addBos && bosId !== undefined ? [bosId, ...ids] : ids;
    },
    decode: (ids) => ids.map((id) => String.fromCharCode(id + 95)).join(""),
  };
}

/** Asserts that `promise` rejects with `type` whose message contains every fragment. */
async function rejectsWith(
  promise: Promise<unknown>,
  type: typeof FormatError | typeof UsageError,
  fragments: string[],
) {
  await assert.rejects(promise, (err: Error) => {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err.name}: ${err.message}`);
    for (const fragment of fragments) {
      assert.ok(err.message.includes(fragment), `"${fragment}" missing from: ${err.message}`);
    }
    return true;
  });
}

Deno.test("tokenFileKind picks the kind by extension", () => {
  // path                 expected kind
  const cases: [string, string][] = [
    ["ids.json", "json"],
    ["IDS.JSON", "json"],
    ["ids.bin", "u32"],
    ["ids.u32", "u32"],
    ["wiki.test.raw", "text"],
    ["story.txt", "text"],
    ["no_extension", "text"],
  ];
  for (const [path, kind] of cases) assert.equal(tokenFileKind(path), kind, path);
});

Deno.test("readTokenFile reads a JSON id array", async () => {
  const path = await tempFile(".json", "[1, 0, 511, 7]");
  const docs = await readTokenFile(path, { vocabSize: 512 });
  assert.equal(docs.length, 1);
  assert.deepEqual([...docs[0]], [1, 0, 511, 7]);
});

Deno.test("readTokenFile reads JSON documents separately", async () => {
  const path = await tempFile(".json", "[[1, 2, 3], [1, 4]]");
  const docs = await readTokenFile(path, { vocabSize: 8 });
  assert.deepEqual(docs.map((d) => [...d]), [[1, 2, 3], [1, 4]]);
});

Deno.test("readTokenFile reads raw little-endian uint32", async () => {
  for (const suffix of [".bin", ".u32"]) {
    const path = await tempFile(suffix, u32Bytes([1, 300, 0, 511]));
    const [doc] = await readTokenFile(path, { vocabSize: 512 });
    assert.deepEqual([...doc], [1, 300, 0, 511], suffix);
  }
});

Deno.test("readTokenFile encodes text with BOS", async () => {
  const path = await tempFile(".txt", "abc");
  const [doc] = await readTokenFile(path, { vocabSize: 40, tokenizer: charTokenizer(1) });
  assert.deepEqual([...doc], [1, 2, 3, 4]);
});

Deno.test("readTokenFile encodes text without BOS when the tokenizer has none", async () => {
  const path = await tempFile(".txt", "abc");
  const [doc] = await readTokenFile(path, { vocabSize: 40, tokenizer: charTokenizer(undefined) });
  assert.deepEqual([...doc], [2, 3, 4]);
});

Deno.test("readTokenFile rejects out-of-vocabulary JSON ids", async () => {
  const path = await tempFile(".json", "[1, 2, 512]");
  await rejectsWith(readTokenFile(path, { vocabSize: 512 }), FormatError, [
    path,
    "[2]",
    "512",
    "[0, 512)",
  ]);
});

Deno.test("readTokenFile rejects negative JSON ids", async () => {
  const path = await tempFile(".json", "[[1, 2], [3, -1]]");
  await rejectsWith(readTokenFile(path, { vocabSize: 512 }), FormatError, [path, "[1][1]", "-1"]);
});

Deno.test("readTokenFile rejects out-of-vocabulary uint32 ids", async () => {
  const path = await tempFile(".u32", u32Bytes([1, 70000, 2]));
  await rejectsWith(readTokenFile(path, { vocabSize: 512 }), FormatError, [
    path,
    "token 1 (byte offset 4)",
    "70000",
  ]);
});

Deno.test("readTokenFile rejects out-of-vocabulary text tokens", async () => {
  const path = await tempFile(".txt", "az"); // "z" encodes to 27
  await rejectsWith(
    readTokenFile(path, { vocabSize: 20, tokenizer: charTokenizer(1) }),
    FormatError,
    [path, "token 2 after encoding", "27"],
  );
});

Deno.test("readTokenFile rejects empty files of every kind", async () => {
  for (const suffix of [".json", ".bin", ".u32", ".txt"]) {
    const path = await tempFile(suffix, "");
    await rejectsWith(
      readTokenFile(path, { vocabSize: 512, tokenizer: charTokenizer(1) }),
      FormatError,
      [path, "empty"],
    );
  }
});

Deno.test("readTokenFile rejects empty JSON arrays and documents", async () => {
  const empty = await tempFile(".json", "[]");
  await rejectsWith(readTokenFile(empty, { vocabSize: 8 }), FormatError, [
    empty,
    "top level",
    "empty",
  ]);
  const emptyDoc = await tempFile(".json", "[[1], []]");
  await rejectsWith(readTokenFile(emptyDoc, { vocabSize: 8 }), FormatError, [
    emptyDoc,
    "[1]",
    "empty",
  ]);
});

Deno.test("readTokenFile rejects whitespace-only text", async () => {
  const path = await tempFile(".txt", " \n\t\n");
  await rejectsWith(
    readTokenFile(path, { vocabSize: 40, tokenizer: charTokenizer(1) }),
    FormatError,
    [path, "whitespace"],
  );
});

Deno.test("readTokenFile rejects a uint32 file of odd size", async () => {
  const path = await tempFile(".bin", new Uint8Array(10));
  await rejectsWith(readTokenFile(path, { vocabSize: 512 }), FormatError, [
    path,
    "file size",
    "10 bytes",
  ]);
});

Deno.test("readTokenFile rejects malformed JSON", async () => {
  // content                  field named       detail
  const cases: [string, string, string][] = [
    ["[1, 2,", "", "Invalid JSON"],
    ['{"ids": [1]}', "top level", "got an object"],
    ["[1, 2.5, 3]", "[1]", "integer token id, got 2.5"],
    ['[1, "7"]', "[1]", 'got "7"'],
    ["[[1, 2], 3]", "[1]", "array of token ids"],
  ];
  for (const [content, field, detail] of cases) {
    const path = await tempFile(".json", content);
    await rejectsWith(readTokenFile(path, { vocabSize: 8 }), FormatError, [path, field, detail]);
  }
});

Deno.test("readTokenFile rejects text when the model has no tokenizer", async () => {
  const path = await tempFile(".txt", "Once upon a time");
  await rejectsWith(readTokenFile(path, { vocabSize: 512, tokenizer: null }), UsageError, [
    path,
    "no tokenizer",
    ".json",
  ]);
});

Deno.test("readTokenFile rejects text that is not UTF-8", async () => {
  const path = await tempFile(".txt", new Uint8Array([0x61, 0xff, 0xfe]));
  await rejectsWith(
    readTokenFile(path, { vocabSize: 40, tokenizer: charTokenizer(1) }),
    FormatError,
    [path, "UTF-8"],
  );
});

Deno.test("readTokenFile reports a missing file", async () => {
  const path = `${await Deno.makeTempDir()}/missing.json`;
  await rejectsWith(readTokenFile(path, { vocabSize: 8 }), FormatError, [path, "not found"]);
});
