/**
 * Chat calibration data: JSONL files with one conversation a line, rendered with the
 * model's chat template and encoded with its tokenizer.
 *
 * Each line is `{"messages": [{"role": "user", "content": "..."}, ...]}` or the bare
 * array of messages. The rendered text is encoded without adding BOS; when the template
 * does not emit BOS itself and the tokenizer has one, BOS is prepended, so every
 * conversation starts as the model saw documents in training.
 *
 * @module
 */
import { type ChatMessage, renderChat } from "../tokenizer/chat_template.ts";
import { FormatError, UsageError } from "../errors.ts";
import type { LoadedModel } from "../model/model.ts";

/**
 * Reads a JSONL conversation file into one token array per conversation.
 *
 * @example
 * ```ts ignore
 * const docs = await readChatFile("chats.jsonl", model);
 * ```
 * @param path JSONL file.
 * @param model Model with a tokenizer and a chat template.
 * @throws {UsageError} When the model has no tokenizer or chat template.
 * @throws {FormatError} When a line is not a conversation, naming the line.
 */
export async function readChatFile(path: string, model: LoadedModel): Promise<Int32Array[]> {
  const { tokenizer, chatTemplate } = model;
  if (!tokenizer || !chatTemplate) {
    throw new UsageError(
      `--chat needs a model with a tokenizer and a chat template; ${model.path} has ${
        tokenizer ? "no chat template" : "no tokenizer"
      }`,
    );
  }
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new FormatError(path, "", "Data file not found: check the --data path");
    }
    throw err;
  }
  // Tokenizers from tokenizer.json carry the special-token texts templates print.
  const texts = tokenizer as { bosToken?: string; eosToken?: string };
  const docs: Int32Array[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "") continue;
    const messages = parseConversation(path, i + 1, lines[i]);
    const rendered = renderChat(chatTemplate, {
      messages,
      bosToken: texts.bosToken ?? "",
      eosToken: texts.eosToken ?? "",
      source: `${model.path} chat template`,
    });
    const ids = tokenizer.encode(rendered, { addBos: false });
    if (tokenizer.bosId !== undefined && ids[0] !== tokenizer.bosId) ids.unshift(tokenizer.bosId);
    for (let j = 0; j < ids.length; j++) {
      if (!(ids[j] >= 0 && ids[j] < model.config.vocabSize)) {
        throw new FormatError(
          path,
          `line ${i + 1}`,
          `Token id ${
            ids[j]
          } is outside the model's vocabulary [0, ${model.config.vocabSize}): the tokenizer does not match the model`,
        );
      }
    }
    docs.push(Int32Array.from(ids));
  }
  if (docs.length === 0) {
    throw new FormatError(path, "", "No conversation found: expected one JSON conversation a line");
  }
  return docs;
}

function parseConversation(path: string, line: number, raw: string): ChatMessage[] {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new FormatError(path, `line ${line}`, `Invalid JSON: ${(err as Error).message}`);
  }
  const messages = Array.isArray(value) ? value : (value as { messages?: unknown })?.messages;
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new FormatError(
      path,
      `line ${line}`,
      'Expected {"messages": [{"role": ..., "content": ...}, ...]} or a non-empty array of messages',
    );
  }
  return messages.map((m, j) => {
    const msg = m as Partial<ChatMessage>;
    if (typeof msg?.role !== "string" || typeof msg?.content !== "string") {
      throw new FormatError(
        path,
        `line ${line} message ${j}`,
        "Expected string fields role and content",
      );
    }
    return { role: msg.role, content: msg.content };
  });
}
