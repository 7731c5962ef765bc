/**
 * The tokenizer interface every tokenizer implementation (tokenizer.json, llama2.c
 * tokenizer.bin, GGUF vocabulary) provides.
 *
 * @module
 */

/** Text to token ids and back. */
export interface Tokenizer {
  /** Number of ids the tokenizer can produce. */
  readonly vocabSize: number;
  /** Beginning-of-sequence id, or undefined when there is none. */
  readonly bosId: number | undefined;
  /** End-of-sequence ids (generation stops at any of them). */
  readonly eosIds: readonly number[];
  /** BOS token text, passed to chat templates as `bos_token`, when known. */
  readonly bosToken?: string;
  /** EOS token text, passed to chat templates as `eos_token`, when known. */
  readonly eosToken?: string;
  /**
   * Encodes text to ids.
   *
   * @param text Input text.
   * @param options `addBos` prepends the BOS id (default false).
   */
  encode(text: string, options?: { addBos?: boolean }): number[];
  /**
   * Decodes ids to text.
   *
   * @param ids Token ids.
   */
  decode(ids: readonly number[]): string;
}
