/**
 * A multi-turn chat over any {@linkcode CausalLM}: each turn renders the whole
 * conversation with the model's Jinja chat template, drops the oldest turns when the
 * prompt and the reply budget would overflow the context, and streams the reply as text.
 *
 * @module
 */
import type { CausalLM } from "./causal_lm.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { type ChatMessage, renderChat } from "../tokenizer/chat_template.ts";
import { type GenerateStats, generateTokens } from "./generate.ts";
import { UsageError } from "../errors.ts";

/** Options of {@linkcode ChatSession}. */
export interface ChatSessionOptions {
  /** Jinja chat template. */
  template: string;
  /** Source of the template (a file name), named in template errors. */
  templateSource?: string;
  /** Tokenizer of the model. */
  tokenizer: Tokenizer;
  /** Optional system message kept at the start of every prompt. */
  system?: string;
  /** Tokens reserved for each reply. Default 256. */
  maxReplyTokens?: number;
  /** Sampling temperature; 0 is greedy. Default 0.8. */
  temperature?: number;
  /** Nucleus mass. Default 0.9. */
  topP?: number;
  /** Sampler seed. Default 1. */
  seed?: number;
}

/** Outcome of one reply. */
export interface ChatReply {
  /** The reply text, stored in the history. */
  text: string;
  /** Generation counts and speeds. */
  stats: GenerateStats;
  /** Turns (user and assistant messages) dropped from the start to fit the context. */
  droppedMessages: number;
}

/**
 * A conversation with a model.
 *
 * @example Two turns
 * ```ts ignore
 * const chat = new ChatSession(lm, { template: model.chatTemplate!, tokenizer: model.tokenizer! });
 * const first = await chat.send("Hello", (text) => Deno.stdout.writeSync(new TextEncoder().encode(text)));
 * const second = await chat.send("And then?");
 * ```
 */
export class ChatSession {
  /** Messages so far, without the system message. */
  readonly messages: ChatMessage[] = [];
  #lm: CausalLM;
  #options: ChatSessionOptions;
  #turn = 0;

  /**
   * Starts an empty conversation.
   *
   * @param lm Model to run; its KV cache is reset on every turn.
   * @param options Template, tokenizer and sampling settings.
   */
  constructor(lm: CausalLM, options: ChatSessionOptions) {
    this.#lm = lm;
    this.#options = options;
  }

  /**
   * Adds a user message and generates the assistant's reply, streaming new text.
   *
   * @param text User message.
   * @param onText Called with each new piece of reply text.
   * @throws {UsageError} When the message alone does not fit the context.
   */
  async send(text: string, onText?: (piece: string) => void): Promise<ChatReply> {
    const { tokenizer } = this.#options;
    const maxReply = this.#options.maxReplyTokens ?? 256;
    const contextLength = (this.#lm as { contextLength?: number }).contextLength ??
      this.#lm.config.maxSeqLen;
    // a message that cannot fit even alone is rejected before the history is touched
    const alone = this.#encode([{ role: "user", content: text }]);
    if (alone.length + 1 > contextLength) {
      throw new UsageError(
        `The message needs ${alone.length} prompt tokens but the context holds ${contextLength}: send a shorter message`,
      );
    }
    this.messages.push({ role: "user", content: text });

    // drop whole turns from the start until the prompt leaves room for the reply budget
    let prompt = this.#encode(this.messages);
    let dropped = 0;
    while (prompt.length + Math.min(maxReply, 16) > contextLength && this.messages.length > 1) {
      dropped += this.messages.splice(0, this.messages[1]?.role === "assistant" ? 2 : 1).length;
      prompt = this.#encode(this.messages);
    }

    const stopIds = [...new Set([...tokenizer.eosIds, ...(this.#lm.config.eosIds ?? [])])];
    const stream = generateTokens(this.#lm, prompt, {
      maxTokens: Math.min(maxReply, contextLength - prompt.length),
      temperature: this.#options.temperature ?? 0.8,
      topP: this.#options.topP ?? 0.9,
      seed: (this.#options.seed ?? 1) + this.#turn++,
      stopIds,
    });
    const ids: number[] = [];
    let printed = "";
    let next = await stream.next();
    while (!next.done) {
      ids.push(next.value);
      // decode the whole reply and emit what is new, holding back an incomplete character
      const decoded = tokenizer.decode(ids);
      if (!decoded.endsWith("\uFFFD") && decoded.startsWith(printed)) {
        onText?.(decoded.slice(printed.length));
        printed = decoded;
      }
      next = await stream.next();
    }
    const reply = tokenizer.decode(ids);
    if (reply.startsWith(printed) && reply.length > printed.length) {
      onText?.(reply.slice(printed.length));
    }
    this.messages.push({ role: "assistant", content: reply });
    return { text: reply, stats: next.value, droppedMessages: dropped };
  }

  #encode(conversation: readonly ChatMessage[]): number[] {
    const { tokenizer, template, system } = this.#options;
    const messages = system ? [{ role: "system", content: system }, ...conversation] : conversation;
    const text = renderChat(template, {
      messages,
      addGenerationPrompt: true,
      bosToken: tokenizer.bosToken ?? "",
      eosToken: tokenizer.eosToken ?? "",
      source: this.#options.templateSource,
    });
    const ids = tokenizer.encode(text);
    // Templates that do not write bos_token themselves still need the BOS the model was trained with.
    const bos = tokenizer.bosId;
    if (bos !== undefined && !tokenizer.bosToken && ids[0] !== bos) ids.unshift(bos);
    return ids;
  }
}
