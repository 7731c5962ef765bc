import assert from "node:assert/strict";
import { join } from "node:path";
import {
  encodeLlama2cTokenizer,
  loadLlama2cTokenizer,
  parseLlama2cTokenizer,
} from "../src/tokenizer/llama2c_tokenizer.ts";
import { byteLevelTokenizerJson } from "../src/tokenizer/gguf_tokenizer.ts";
import { HfTokenizer } from "../src/tokenizer/hf_tokenizer.ts";
import { renderChat } from "../src/tokenizer/chat_template.ts";
import { writeGguf } from "../src/formats/gguf_writer.ts";
import { loadGguf } from "../src/formats/gguf_model.ts";
import { type GgufEntry, GgufType } from "../src/formats/gguf_types.ts";
import { FormatError } from "../src/errors.ts";
import type { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { randomWeights, tinyConfig } from "./_helpers.ts";
import { freshPath, tempDir } from "./_format_helpers.ts";

// A SentencePiece-style vocabulary: unk, BOS, EOS, 256 byte pieces, then scored pieces.
// " " stands for the space symbol, replaced by "\u2581" for the GGUF variant.
const SCORED: [string, number][] = [
  [" ", -10],
  ["a", -10],
  ["b", -10],
  ["c", -10],
  ["d", -10],
  ["e", -10],
  ["h", -10],
  ["l", -10],
  ["o", -10],
  ["r", -10],
  ["w", -10],
  [" h", -5],
  ["he", -1],
  ["ll", -2],
  ["lo", -6],
  ["llo", -3],
  ["hello", -4],
  [" hello", -0.5],
  [" c", -1],
  ["ab", 0],
  [" cab", -1.2],
  ["aa", -1],
];
const PIECES = [
  "<unk>",
  "\n<s>\n",
  "\n</s>\n",
  ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
  ...SCORED.map(([p]) => p),
];
const SCORES = [0, 0, 0, ...new Array(256).fill(0), ...SCORED.map(([, s]) => s)];
const id = (piece: string) => PIECES.indexOf(piece);

/**
 * Checks the splits that score-merge BPE must produce with the vocabulary above.
 *
 * @param tok Tokenizer under test.
 * @param pieces Its vocabulary, where `space` stands for " ".
 * @param space Space symbol of the vocabulary.
 */
function checkScoreBpe(tok: Tokenizer, pieces: string[], space: string) {
  const idOf = (s: string) => pieces.indexOf(s.replaceAll(" ", space));
  assert.deepEqual(tok.encode("hello cab"), [idOf(" hello"), idOf(" cab")], "merges by score");
  assert.deepEqual(
    tok.encode("aaa"),
    [idOf(" "), idOf("aa"), idOf("a")],
    "ties merge leftmost first",
  );
  assert.deepEqual(
    tok.encode("\u00e9"),
    [idOf(" "), id("<0xC3>"), id("<0xA9>")],
    "byte fallback for a missing character",
  );
  assert.deepEqual(tok.encode("hello", { addBos: true }), [1, idOf(" hello")]);
  assert.deepEqual(tok.encode(""), []);
  for (const text of ["hello cab", "we are here \u00e9\u4e2d!", "  two  spaces"]) {
    assert.equal(tok.decode(tok.encode(text, { addBos: true })), text, JSON.stringify(text));
  }
  assert.equal(tok.bosId, 1);
  assert.deepEqual(tok.eosIds, [2]);
}

Deno.test("llama2c tokenizer.bin encodes like run.c", async () => {
  const path = await freshPath("tokenizer.bin");
  await Deno.writeFile(path, encodeLlama2cTokenizer(PIECES, SCORES));
  const tok = await loadLlama2cTokenizer(path, { vocabSize: PIECES.length });
  assert.equal(tok.vocabSize, PIECES.length);
  checkScoreBpe(tok, PIECES, " ");
});

Deno.test("llama2c tokenizer.bin rejects truncation and a wrong size", () => {
  const bytes = encodeLlama2cTokenizer(PIECES, SCORES);
  assert.throws(
    () => parseLlama2cTokenizer(bytes.subarray(0, bytes.length - 2), "t.bin"),
    (err: Error) => {
      assert.ok(err instanceof FormatError);
      assert.match(err.message, /^t\.bin: token \d+: .*truncated/);
      return true;
    },
  );
  assert.throws(
    () => parseLlama2cTokenizer(bytes, "t.bin", 32000),
    /t\.bin: vocab_size: File has 281 tokens/,
  );
});

Deno.test("GGUF llama vocabulary encodes with the score-merge BPE", async () => {
  // SentencePiece spelling: "\u2581" for spaces, "<s>" and "</s>", plus a user-defined token.
  const ggufPieces = PIECES.map((p, i) => (i > 258 ? p.replaceAll(" ", "\u2581") : p));
  ggufPieces[1] = "<s>";
  ggufPieces[2] = "</s>";
  ggufPieces.push("<|im_start|>");
  // GGUF token types: 2 unknown, 3 control (BOS, EOS), 6 byte, 1 normal, 4 user-defined.
  const tokenTypes = ggufPieces.map((_, i) => {
    if (i === 0) return 2;
    if (i < 3) return 3;
    if (i < 259) return 6;
    return i === ggufPieces.length - 1 ? 4 : 1;
  });
  const metadata = new Map<string, GgufEntry>([
    ["tokenizer.ggml.model", { type: GgufType.STRING, value: "llama" }],
    [
      "tokenizer.ggml.tokens",
      { type: GgufType.ARRAY, itemType: GgufType.STRING, value: ggufPieces },
    ],
    [
      "tokenizer.ggml.scores",
      { type: GgufType.ARRAY, itemType: GgufType.FLOAT32, value: [...SCORES, 0] },
    ],
    [
      "tokenizer.ggml.token_type",
      { type: GgufType.ARRAY, itemType: GgufType.INT32, value: tokenTypes },
    ],
  ]);
  const config = tinyConfig({ vocabSize: ggufPieces.length, bosId: 1, eosIds: [2] });
  const path = await freshPath("spm.gguf");
  await writeGguf({ config, weights: randomWeights(config) }, path, {
    quiet: true,
    metadata,
    chatTemplate: "{{ bos_token }}x",
  });
  const model = await loadGguf(path);
  model.weights.close();
  assert.ok(model.tokenizer);
  assert.equal(model.chatTemplate, "{{ bos_token }}x");
  checkScoreBpe(model.tokenizer, ggufPieces, "\u2581");

  // Special pieces in the text become their ids, and the text after them gets the space prefix.
  const tok = model.tokenizer;
  const hello = ggufPieces.indexOf("\u2581hello");
  const imStart = ggufPieces.length - 1;
  assert.deepEqual(tok.encode("<s>hello</s>"), [1, hello, 2]);
  assert.deepEqual(tok.encode("hello<|im_start|>hello"), [hello, imStart, hello]);
  assert.equal(tok.decode([1, hello, imStart, hello, 2]), "hello<|im_start|> hello");
});

/** GPT-2's byte-to-character table (bytes_to_unicode). */
function byteChars(): string[] {
  const direct = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(direct(b) ? b : 256 + extra++));
}

const BYTE_CHARS = byteChars();
const MERGES = ["h e", "l l", "ll o", "he llo", "\u0120 w", "o r", "\u0120w or"];
const BPE_TOKENS = [
  ...BYTE_CHARS,
  "he",
  "ll",
  "llo",
  "hello",
  "\u0120w",
  "or",
  "\u0120wor",
  "<|im_start|>",
  "<|im_end|>",
  "<|endoftext|>",
];
const BPE_TYPES = BPE_TOKENS.map((_, i) => (i >= 263 ? 3 : 1));
const byteId = (ch: string) => ch.charCodeAt(0);

function checkByteLevel(tok: Tokenizer) {
  assert.deepEqual(tok.encode("hello world"), [259, 262, byteId("l"), byteId("d")]);
  assert.deepEqual(tok.encode("<|im_start|>he"), [263, 256], "special tokens match as one id");
  assert.deepEqual(tok.encode("\u00e9"), [0xc3, 0xa9], "one id per UTF-8 byte");
  for (const text of ["hello world", "caf\u00e9 \u4e2d\u6587\n\ttab"]) {
    assert.equal(tok.decode(tok.encode(text)), text);
  }
  assert.equal(tok.decode([265, 259]), "hello", "decode drops special tokens");
}

Deno.test("GGUF gpt2 vocabulary encodes byte-level BPE", async () => {
  const metadata = new Map<string, GgufEntry>([
    ["tokenizer.ggml.model", { type: GgufType.STRING, value: "gpt2" }],
    ["tokenizer.ggml.tokens", {
      type: GgufType.ARRAY,
      itemType: GgufType.STRING,
      value: BPE_TOKENS,
    }],
    ["tokenizer.ggml.token_type", {
      type: GgufType.ARRAY,
      itemType: GgufType.INT32,
      value: BPE_TYPES,
    }],
    ["tokenizer.ggml.merges", { type: GgufType.ARRAY, itemType: GgufType.STRING, value: MERGES }],
  ]);
  const config = tinyConfig({
    vocabSize: BPE_TOKENS.length,
    architecture: "qwen2",
    qkvBias: true,
    ropeStyle: "half",
    bosId: 265,
    eosIds: [264],
  });
  const path = await freshPath("bpe.gguf");
  await writeGguf({ config, weights: randomWeights(config) }, path, { quiet: true, metadata });
  const model = await loadGguf(path);
  model.weights.close();
  assert.ok(model.tokenizer);
  assert.equal(model.tokenizer.bosId, 265);
  assert.deepEqual(model.tokenizer.eosIds, [264]);
  checkByteLevel(model.tokenizer);
});

Deno.test("HfTokenizer loads tokenizer.json from a directory", async () => {
  const dir = await tempDir();
  const json = byteLevelTokenizerJson(BPE_TOKENS, BPE_TYPES, MERGES, "qwen2");
  await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(json));
  await Deno.writeTextFile(
    join(dir, "tokenizer_config.json"),
    JSON.stringify({ bos_token: null, eos_token: "<|im_end|>" }),
  );
  const tok = await HfTokenizer.fromDirectory(dir);
  assert.ok(tok);
  assert.equal(tok.bosId, undefined);
  assert.deepEqual(tok.eosIds, [264]);
  assert.equal(tok.tokenToId("<|im_start|>"), 263);
  checkByteLevel(tok);
  assert.equal(await HfTokenizer.fromDirectory(await tempDir()), null);
});

Deno.test("HfTokenizer rejects an invalid tokenizer.json", () => {
  assert.throws(
    () => HfTokenizer.fromJson({ model: { type: "Nope" } }, {}, "m/tokenizer.json"),
    (err: Error) => {
      assert.ok(err instanceof FormatError);
      assert.match(err.message, /^m\/tokenizer\.json: /);
      return true;
    },
  );
});

Deno.test("renderChat renders ChatML with a generation prompt", () => {
  const template =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }];
  assert.equal(
    renderChat(template, { messages, addGenerationPrompt: true }),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.ok(!renderChat(template, { messages }).endsWith("assistant\n"));
});

Deno.test("renderChat passes bos and eos tokens and raises template errors", () => {
  const template =
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]" +
    "{% elif m.role == 'assistant' %} {{ m.content }}{{ eos_token }}{% else %}{{ raise_exception('Unsupported role ' + m.role) }}{% endif %}{% endfor %}";
  const messages = [{ role: "user", content: "a" }, { role: "assistant", content: "b" }];
  assert.equal(
    renderChat(template, { messages, bosToken: "<s>", eosToken: "</s>" }),
    "<s>[INST] a [/INST] b</s>",
  );
  assert.throws(
    () => renderChat(template, { messages: [{ role: "tool", content: "x" }], source: "t.jinja" }),
    /t\.jinja: Rendering failed: Unsupported role tool/,
  );
  assert.throws(() => renderChat("{% if %}", { messages: [] }), /Invalid Jinja template/);
});

Deno.test("HfTokenizer maps out-of-vocabulary pieces to the unknown token", () => {
  const json = (unk: string | undefined) => ({
    model: { type: "WordLevel", vocab: { "<unk>": 0, a: 1, b: 2 }, unk_token: unk },
    normalizer: null,
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: null,
  });
  const tokenizer = HfTokenizer.fromJson(json("<unk>"), {}, "m/tokenizer.json");
  assert.deepEqual(tokenizer.encode("a zz b"), [1, 0, 2]);
  // "<unk>" splits into pieces that are not in the vocabulary either.
  for (const id of tokenizer.encode("<unk> a")) assert.equal(typeof id, "number");
  assert.equal(tokenizer.encode("<unk> a").at(-1), 1);
});
