import assert from "node:assert/strict";
import { join } from "node:path";
import { writeHf } from "../src/formats/hf_writer.ts";
import { loadModel } from "../src/model/load.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { ChatSession } from "../src/model/chat.ts";
import { generate } from "../src/model/generate.ts";
import { renderChat } from "../src/tokenizer/chat_template.ts";
import { UsageError } from "../src/errors.ts";
import { randomWeights, tinyConfig } from "./_helpers.ts";
import { quantizeModel } from "../src/quantize/quantize_model.ts";

// Word-level vocabulary w1..w36 over the tiny model's 37 ids; each message ends with w1,
// and the generation prompt is w2.
const TEMPLATE =
  "{% for m in messages %}{{ m.content }} w1 {% endfor %}{% if add_generation_prompt %}w2{% endif %}";

async function tinyChatModel(maxSeqLen: number): Promise<string> {
  const config = tinyConfig({ ropeStyle: "half", maxSeqLen, eosIds: [36] });
  const vocab = Object.fromEntries(
    Array.from({ length: config.vocabSize }, (_, i) => [i === 0 ? "<unk>" : `w${i}`, i]),
  );
  const tokenizerJson = JSON.stringify({
    model: { type: "WordLevel", vocab, unk_token: "<unk>" },
    normalizer: null,
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: null,
    added_tokens: [],
  });
  const dir = join(await Deno.makeTempDir(), "chat-hf");
  await writeHf({ config, weights: randomWeights(config, 5) }, dir, {
    quiet: true,
    files: {
      "tokenizer.json": new TextEncoder().encode(tokenizerJson),
      "tokenizer_config.json": new TextEncoder().encode(
        JSON.stringify({ chat_template: TEMPLATE }),
      ),
    },
  });
  return dir;
}

Deno.test("ChatSession replies as generate does on the rendered prompt", async () => {
  const model = await loadModel(await tinyChatModel(64));
  const lm = await ReferenceModel.create(model.config, model.weights);
  const tokenizer = model.tokenizer!;
  const chat = new ChatSession(lm, {
    template: model.chatTemplate!,
    tokenizer,
    temperature: 0,
    maxReplyTokens: 6,
  });

  let streamed = "";
  const first = await chat.send("w3 w4", (piece) => streamed += piece);
  const prompt = tokenizer.encode(
    renderChat(TEMPLATE, {
      messages: [{ role: "user", content: "w3 w4" }],
      addGenerationPrompt: true,
    }),
  );
  const expected = await generate(lm, prompt, { maxTokens: 6, temperature: 0, stopIds: [36] });
  assert.equal(first.text, tokenizer.decode(expected.tokens));
  assert.equal(streamed, first.text);
  assert.equal(first.droppedMessages, 0);

  const second = await chat.send("w5");
  assert.deepEqual(chat.messages.map((m) => m.role), ["user", "assistant", "user", "assistant"]);
  assert.equal(chat.messages[3].content, second.text);
  model.weights.close();
});

Deno.test("ChatSession drops old turns to fit the context", async () => {
  const model = await loadModel(await tinyChatModel(24));
  const lm = await ReferenceModel.create(model.config, model.weights);
  const chat = new ChatSession(lm, {
    template: model.chatTemplate!,
    tokenizer: model.tokenizer!,
    temperature: 0,
    maxReplyTokens: 4,
  });
  let dropped = 0;
  for (let turn = 0; turn < 6; turn++) {
    const reply = await chat.send("w3 w4 w5 w6");
    dropped += reply.droppedMessages;
    assert.ok(lm.position <= 24, `position ${lm.position}`);
  }
  assert.ok(dropped > 0, "no turns were dropped");
  await assert.rejects(() => chat.send(Array(30).fill("w7").join(" ")), UsageError);
  assert.equal(
    chat.messages.at(-1)?.role,
    "assistant",
    "a rejected message stays out of the history",
  );
  model.weights.close();
});

Deno.test("chat task streams replies from stdin", async () => {
  const dir = await tinyChatModel(64);
  const command = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "tasks/chat.ts",
      "--model",
      dir,
      "--engine",
      "reference",
      "--temperature",
      "0",
      "--max-tokens",
      "5",
      "--quiet",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = command.spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("w3 w4\n/exit\n"));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const text = new TextDecoder().decode(stdout);
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  assert.match(text, /^w\d+( w\d+)*\n$/);
});

Deno.test("chat task rejects a model without a chat template", async () => {
  const { STORIES_260K } = await import("./_helpers.ts");
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tasks/chat.ts", "--model", STORIES_260K],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 1);
  assert.match(new TextDecoder().decode(stderr), /no tokenizer/);
});

Deno.test("quantized file carries the tokenizer and chat template", async () => {
  const source = await loadModel(await tinyChatModel(64));
  const out = join(await Deno.makeTempDir(), "q.safetensors");
  await quantizeModel(source, null, { method: "rtn", bits: 8, groupSize: 8, out, quiet: true });
  const quantized = await loadModel(out);
  assert.equal(quantized.format, "quantized");
  assert.equal(quantized.chatTemplate, source.chatTemplate);
  assert.ok(quantized.tokenizer, "tokenizer carried");
  assert.deepEqual(quantized.tokenizer.encode("w3 w4 w1"), source.tokenizer!.encode("w3 w4 w1"));
  assert.deepEqual(quantized.tokenizer.eosIds, source.tokenizer!.eosIds);

  // a chat turn runs from the quantized file alone
  const lm = await ReferenceModel.create(quantized.config, quantized.weights);
  const chat = new ChatSession(lm, {
    template: quantized.chatTemplate!,
    tokenizer: quantized.tokenizer,
    temperature: 0,
    maxReplyTokens: 4,
  });
  const reply = await chat.send("w3 w4");
  assert.equal(chat.messages.length, 2);
  assert.equal(chat.messages[1].content, reply.text);
  source.weights.close();
  quantized.weights.close();
});
