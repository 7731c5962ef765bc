/**
 * Chat templates: Jinja templates (as stored in tokenizer_config.json or GGUF's
 * `tokenizer.chat_template`) rendered with `@huggingface/jinja`, with the variables
 * transformers' `apply_chat_template` passes: `messages`, `add_generation_prompt`,
 * `bos_token` and `eos_token`.
 *
 * @module
 */
import { Template } from "@huggingface/jinja";
import { FormatError } from "../errors.ts";

/** One chat message. */
export interface ChatMessage {
  /** "system", "user" or "assistant" (templates may accept others). */
  role: string;
  /** Message text. */
  content: string;
}

/** Options of {@linkcode renderChat}. */
export interface ChatRenderOptions {
  /** Conversation so far. */
  messages: readonly ChatMessage[];
  /** Append the prompt that starts the assistant's reply. Default false. */
  addGenerationPrompt?: boolean;
  /** BOS token text. Default "". */
  bosToken?: string;
  /** EOS token text. Default "". */
  eosToken?: string;
  /** Further template variables (for example `tools`). */
  extra?: Record<string, unknown>;
  /** Source of the template (a file name), used in errors. Default "chat template". */
  source?: string;
}

/**
 * Renders a chat with a Jinja chat template.
 *
 * @example ChatML
 * ```ts
 * import { renderChat } from "./chat_template.ts";
 * const template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
 *   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
 * const text = renderChat(template, { messages: [{ role: "user", content: "Hi" }], addGenerationPrompt: true });
 * if (text !== "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") throw new Error(text);
 * ```
 * @param template Jinja source.
 * @param options Messages and special tokens.
 * @returns The prompt text, to be tokenized without adding BOS again when the template writes it.
 * @throws {FormatError} When the template does not parse or raises an exception.
 */
export function renderChat(template: string, options: ChatRenderOptions): string {
  const source = options.source ?? "chat template";
  let compiled: Template;
  try {
    compiled = new Template(template);
  } catch (err) {
    throw new FormatError(source, "", `Invalid Jinja template: ${(err as Error).message}`);
  }
  try {
    return compiled.render({
      ...options.extra,
      messages: options.messages.map((m) => ({ ...m })),
      add_generation_prompt: options.addGenerationPrompt ?? false,
      bos_token: options.bosToken ?? "",
      eos_token: options.eosToken ?? "",
    });
  } catch (err) {
    throw new FormatError(source, "", `Rendering failed: ${(err as Error).message}`);
  }
}
