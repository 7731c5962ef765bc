/**
 * One entry point that opens any supported checkpoint: a llama2.c `.bin`, a Hugging Face
 * directory, a GGUF file, or a quantized-model safetensors file written by this toolkit.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { loadLlama2c } from "../formats/llama2c.ts";
import { openQuantizedModel } from "../formats/quantized.ts";
import { loadHf } from "../formats/hf.ts";
import { loadGguf } from "../formats/gguf_model.ts";
import type { LoadedModel } from "./model.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { HfTokenizer } from "../tokenizer/hf_tokenizer.ts";

/**
 * Detects the format of `path` and loads it lazily (tensors are read on demand).
 *
 * @example
 * ```ts ignore
 * const model = await loadModel("../shared/models/stories260K.bin");
 * console.log(model.format, model.config.nLayers);
 * ```
 * @param path A file or a Hugging Face model directory.
 * @throws {FormatError} When the path is missing or its format is not recognised.
 */
export async function loadModel(path: string): Promise<LoadedModel> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    throw new FormatError(
      path,
      "",
      "Model path not found: pass --model with a llama2.c .bin, a GGUF file, a quantized .safetensors file or a Hugging Face directory",
    );
  }
  if (info.isDirectory) return await loadHfDirectory(path);
  const magic = await readMagic(path);
  if (magic === "GGUF" || path.endsWith(".gguf")) return await loadGgufModel(path);
  if (path.endsWith(".safetensors")) return await loadQuantizedModel(path);
  return await loadLlama2c(path);
}

async function readMagic(path: string): Promise<string> {
  const file = await Deno.open(path);
  try {
    const bytes = new Uint8Array(4);
    const n = await file.read(bytes);
    return n === 4 ? new TextDecoder().decode(bytes) : "";
  } finally {
    file.close();
  }
}

function loadHfDirectory(path: string): Promise<LoadedModel> {
  return loadHf(path);
}

function loadGgufModel(path: string): Promise<LoadedModel> {
  return loadGguf(path);
}

/**
 * Opens a quantized model written by `deno task quantize`: the original config comes from
 * its metadata and quantized layers are dequantized to dense f32 when read.
 */
async function loadQuantizedModel(path: string): Promise<LoadedModel> {
  const q = await openQuantizedModel(path);
  // The tokenizer and chat template travel in the file's metadata when the source had them.
  let tokenizer: Tokenizer | null = null;
  const json = q.text["tokenizer.json"];
  if (json !== undefined) {
    try {
      const tokenizerConfig = JSON.parse(q.text["tokenizer_config.json"] ?? "{}");
      tokenizer = HfTokenizer.fromJson(
        JSON.parse(json),
        tokenizerConfig,
        `${path} (__metadata__.tokenizer.json)`,
        {
          bosId: q.config.bosId,
          eosIds: q.config.eosIds,
        },
      );
    } catch (err) {
      q.weights.close();
      throw err instanceof FormatError ? err : new FormatError(
        path,
        "__metadata__.tokenizer.json",
        `Invalid JSON: ${(err as Error).message}`,
      );
    }
  }
  return {
    path,
    format: "quantized",
    config: q.config,
    weights: q.weights,
    tokenizer,
    chatTemplate: q.text.chat_template ?? null,
  };
}
