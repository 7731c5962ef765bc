/**
 * Checkpoint conversion: any loaded model to a Hugging Face directory or a GGUF file. Each
 * writer applies the rotary permutation its format needs, and the tokenizer files and
 * chat template travel where the target format can hold them.
 *
 * What travels:
 * - HF to HF: tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 *   generation_config.json and chat_template.jinja are copied.
 * - GGUF to GGUF: every `tokenizer.*` entry is copied.
 * - GGUF "gpt2" vocabulary to HF: a tokenizer.json is built from it.
 * - HF byte-level BPE tokenizer.json to GGUF: a "gpt2" vocabulary is built from it.
 * - Everywhere: the chat template and the BOS/EOS ids.
 * llama2.c checkpoints have no tokenizer to carry.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { UsageError } from "../errors.ts";
import type { LoadedModel } from "../model/model.ts";
import { byteLevelTokenizerJson, byteLevelVocabFromJson } from "../tokenizer/gguf_tokenizer.ts";
import { readJsonIfPresent } from "../tokenizer/hf_tokenizer.ts";
import { GgufFile } from "./gguf.ts";
import { type GgufEntry, GgufType } from "./gguf_types.ts";
import { type GgufDtype, writeGguf } from "./gguf_writer.ts";
import { type HfDtype, writeHf } from "./hf_writer.ts";
import { loadHf } from "./hf.ts";
import { loadGguf } from "./gguf_model.ts";

/** Target formats of {@linkcode convertModel}. */
export type ConvertTarget = "hf" | "gguf";

/** Dtypes each target accepts; the first is the default. */
export const CONVERT_DTYPES: Readonly<Record<ConvertTarget, readonly string[]>> = {
  hf: ["f32", "f16", "bf16"],
  gguf: ["f32", "f16", "q8_0"],
};

/** Files of a Hugging Face directory copied when converting HF to HF. */
const HF_SIDE_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "chat_template.jinja",
];

/** Options of {@linkcode convertModel}. */
export interface ConvertOptions {
  /** Target format. */
  to: ConvertTarget;
  /** Output path (a directory for "hf", a file for "gguf"); must not exist. */
  out: string;
  /** Stored dtype; see {@linkcode CONVERT_DTYPES}. Default "f32". */
  dtype?: string;
  /** Print no progress. Default false. */
  quiet?: boolean;
}

/**
 * Writes a loaded model in another format, then reopens the output to validate it.
 * Nothing is left at `out` when any step fails.
 *
 * @example
 * ```ts ignore
 * const model = await loadModel("stories260K.bin");
 * await convertModel(model, { to: "gguf", dtype: "q8_0", out: "stories260K.gguf" });
 * model.weights.close();
 * ```
 * @param model Loaded source model.
 * @param options Target, output path, dtype and progress.
 * @throws {UsageError} On an unknown target or dtype, or an output that exists or is the input.
 */
export async function convertModel(model: LoadedModel, options: ConvertOptions): Promise<void> {
  const { to, out } = options;
  if (!(to in CONVERT_DTYPES)) {
    throw new UsageError(`Invalid --to ${JSON.stringify(to)}: expected hf or gguf`);
  }
  const dtype = options.dtype ?? CONVERT_DTYPES[to][0];
  if (!CONVERT_DTYPES[to].includes(dtype)) {
    throw new UsageError(
      `Invalid --dtype ${JSON.stringify(dtype)} for --to ${to}: expected one of ${
        CONVERT_DTYPES[to].join(", ")
      }`,
    );
  }
  if (resolve(out) === resolve(model.path)) {
    throw new UsageError(`Output ${out} is the input model: choose another --out`);
  }
  if (await exists(out)) {
    throw new UsageError(`Output ${out} already exists: remove it or choose another --out`);
  }

  if (to === "hf") {
    const files = await hfTokenizerFiles(model);
    // An HF source's template travels inside its copied files.
    const chatTemplate = model.format === "hf" ? null : model.chatTemplate;
    await writeHf(model, out, {
      dtype: dtype as HfDtype,
      files,
      chatTemplate,
      quiet: options.quiet,
    });
  } else {
    let metadata: Map<string, GgufEntry> | undefined;
    if (model.format === "gguf") metadata = await tokenizerEntries(model.path);
    if (model.format === "hf") metadata = await hfVocabEntries(model.path);
    await writeGguf(model, out, {
      dtype: dtype as GgufDtype,
      metadata,
      chatTemplate: model.chatTemplate,
      quiet: options.quiet,
    });
  }
  try {
    const written = to === "hf" ? await loadHf(out) : await loadGguf(out);
    written.weights.close();
  } catch (err) {
    await Deno.remove(out, { recursive: true }).catch(() => {});
    throw err;
  }
}

/**
 * Returns the tokenizer files of a model in Hugging Face form, by file name: copied from an
 * HF directory, or built from a GGUF "gpt2" vocabulary. Other models give none.
 *
 * @example
 * ```ts ignore
 * const files = await hfTokenizerFiles(await loadModel("model.gguf"));
 * console.log(Object.keys(files)); // ["tokenizer.json", "tokenizer_config.json"]
 * ```
 * @param model A loaded model.
 * @returns File contents by name.
 */
export async function hfTokenizerFiles(model: LoadedModel): Promise<Record<string, Uint8Array>> {
  const files: Record<string, Uint8Array> = {};
  if (model.format === "hf") {
    for (const name of HF_SIDE_FILES) {
      try {
        files[name] = await Deno.readFile(join(model.path, name));
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
  } else if (model.format === "gguf") {
    const gguf = await GgufFile.open(model.path);
    try {
      const tokens = gguf.get("tokenizer.ggml.tokens") as string[] | undefined;
      // NOTE: SentencePiece ("llama") vocabularies are not converted to tokenizer.json yet.
      if (gguf.get("tokenizer.ggml.model") === "gpt2" && tokens) {
        const types = (gguf.get("tokenizer.ggml.token_type") as number[] | undefined) ??
          tokens.map(() => 1);
        const merges = (gguf.get("tokenizer.ggml.merges") as string[] | undefined) ?? [];
        const pre = gguf.get("tokenizer.ggml.pre");
        const json = byteLevelTokenizerJson(
          tokens,
          types,
          merges,
          typeof pre === "string" ? pre : "default",
        );
        files["tokenizer.json"] = new TextEncoder().encode(JSON.stringify(json));
        const bos = model.config.bosId, eos = model.config.eosIds?.[0];
        const config = {
          bos_token: bos !== undefined ? tokens[bos] : null,
          eos_token: eos !== undefined ? tokens[eos] : null,
        };
        files["tokenizer_config.json"] = new TextEncoder().encode(JSON.stringify(config, null, 2));
      }
    } finally {
      gguf.close();
    }
  }
  return files;
}

/**
 * Builds GGUF vocabulary entries from an HF directory's byte-level BPE tokenizer.json.
 * Other tokenizers (for example SentencePiece-style ones) return an empty map.
 */
async function hfVocabEntries(dir: string): Promise<Map<string, GgufEntry>> {
  const json = await readJsonIfPresent(join(dir, "tokenizer.json")) as
    | Record<string, unknown>
    | undefined;
  // NOTE: only byte-level BPE tokenizers are carried into GGUF so far.
  const vocab = json ? byteLevelVocabFromJson(json) : null;
  if (!vocab) return new Map();
  const strings = (value: string[]): GgufEntry => ({
    type: GgufType.ARRAY,
    itemType: GgufType.STRING,
    value,
  });
  return new Map<string, GgufEntry>([
    ["tokenizer.ggml.model", { type: GgufType.STRING, value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: GgufType.STRING, value: vocab.pre }],
    ["tokenizer.ggml.tokens", strings(vocab.tokens)],
    ["tokenizer.ggml.token_type", {
      type: GgufType.ARRAY,
      itemType: GgufType.INT32,
      value: vocab.types,
    }],
    ["tokenizer.ggml.merges", strings(vocab.merges)],
  ]);
}

/** Collects every `tokenizer.*` metadata entry of a GGUF file. */
async function tokenizerEntries(path: string): Promise<Map<string, GgufEntry>> {
  const gguf = await GgufFile.open(path);
  try {
    return new Map([...gguf.metadata].filter(([key]) => key.startsWith("tokenizer.")));
  } finally {
    gguf.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
