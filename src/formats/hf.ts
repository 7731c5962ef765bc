/**
 * Loader for Hugging Face model directories: config.json, then model.safetensors or the
 * shards listed in model.safetensors.index.json, with F32, F16 or BF16 tensors read lazily
 * one at a time, plus tokenizer.json, tokenizer_config.json and the chat template when
 * present.
 *
 * Rotary convention: Hugging Face checkpoints store q_proj/k_proj rows for `rotate_half`,
 * so the loaded model has `ropeStyle: "half"`; weights are not permuted.
 *
 * @module
 */
import { join } from "node:path";
import { FormatError } from "../errors.ts";
import { expectedTensors, type ModelConfig, tensorNames } from "../model/config.ts";
import { checkFinite, type LoadedModel, type WeightStore } from "../model/model.ts";
import { HfTokenizer, readJsonIfPresent } from "../tokenizer/hf_tokenizer.ts";
import { SafetensorsFile } from "./safetensors.ts";
import { parseHfConfig } from "./hf_config.ts";

/** Dtypes a Hugging Face checkpoint may store weights in. */
const FLOAT_DTYPES: ReadonlySet<string> = new Set(["F32", "F16", "BF16"]);

/** Buffers Hugging Face checkpoints may store that the forward pass recomputes. */
const IGNORED_TENSOR = /\.rotary_emb\.inv_freq$/;

/** Lazy weights spread over one or more safetensors shards. */
class HfWeights implements WeightStore {
  readonly source: string;
  #shapes: Map<string, number[]>;
  #owner: Map<string, SafetensorsFile>;
  #files: SafetensorsFile[];
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    source: string,
    shapes: Map<string, number[]>,
    owner: Map<string, SafetensorsFile>,
    files: SafetensorsFile[],
  ) {
    this.source = source;
    this.#shapes = shapes;
    this.#owner = owner;
    this.#files = files;
  }

  names(): string[] {
    return [...this.#shapes.keys()];
  }

  shape(name: string): number[] {
    const shape = this.#shapes.get(name);
    if (!shape) throw new FormatError(this.source, name, "Missing tensor");
    return shape;
  }

  async read(name: string): Promise<Float32Array> {
    const file = this.#owner.get(name);
    if (!file) throw new FormatError(this.source, name, "Missing tensor");
    // SafetensorsFile reads seek a shared handle, so concurrent calls run one at a time.
    const task = this.#queue.then(() => file.readF32(name));
    this.#queue = task.catch(() => {});
    const data = await task;
    checkFinite(file.path, name, data);
    return data;
  }

  close(): void {
    for (const f of this.#files) f.close();
  }
}

/**
 * Opens a Hugging Face model directory, validating config.json and every shard header
 * against the config before any tensor is read.
 *
 * @example
 * ```ts ignore
 * const model = await loadHf("models/SmolLM-135M");
 * const embed = await model.weights.read("model.embed_tokens.weight");
 * model.weights.close();
 * ```
 * @param dir Model directory.
 * @throws {FormatError} On a missing or invalid config.json, a missing or corrupt shard, a
 *   tensor whose shape or dtype does not match the config, or an unexpected tensor.
 */
export async function loadHf(dir: string): Promise<LoadedModel> {
  const configPath = join(dir, "config.json");
  const configJson = await readJsonIfPresent(configPath);
  if (configJson === undefined) {
    throw new FormatError(
      configPath,
      "",
      "Missing config.json: a Hugging Face model directory needs one next to its safetensors files",
    );
  }
  const config = parseHfConfig(configJson, configPath);
  const files: SafetensorsFile[] = [];
  try {
    const owner = await openShards(dir, files);
    const shapes = checkTensors(config, owner);
    const weights = new HfWeights(dir, shapes, owner, files);
    const tokenizer = await HfTokenizer.fromDirectory(dir, {
      bosId: config.bosId,
      eosIds: config.eosIds,
    });
    return {
      path: dir,
      format: "hf",
      config,
      weights,
      tokenizer,
      chatTemplate: await readChatTemplate(dir),
    };
  } catch (err) {
    for (const f of files) f.close();
    throw err;
  }
}

/** Opens model.safetensors or every shard of the index; returns the file holding each tensor. */
async function openShards(
  dir: string,
  files: SafetensorsFile[],
): Promise<Map<string, SafetensorsFile>> {
  const owner = new Map<string, SafetensorsFile>();
  const indexPath = join(dir, "model.safetensors.index.json");
  const index = await readJsonIfPresent(indexPath);
  if (index === undefined) {
    let file: SafetensorsFile;
    try {
      file = await SafetensorsFile.open(join(dir, "model.safetensors"));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      throw new FormatError(
        join(dir, "model.safetensors"),
        "",
        "Missing weights: expected model.safetensors or model.safetensors.index.json",
      );
    }
    files.push(file);
    for (const name of file.tensors.keys()) owner.set(name, file);
    return owner;
  }
  const weightMap = (index as { weight_map?: unknown })?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new FormatError(
      indexPath,
      "weight_map",
      "Missing key: expected an object from tensor name to shard file",
    );
  }
  const byShard = new Map<string, SafetensorsFile>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // Shard names must be plain file names, so an index cannot point outside the directory.
    if (
      typeof shard !== "string" || !/^[\w.-]+\.safetensors$/.test(shard) || shard.startsWith(".")
    ) {
      throw new FormatError(
        indexPath,
        `weight_map.${name}`,
        `Invalid shard name ${
          JSON.stringify(shard)
        }: expected a .safetensors file name in the same directory`,
      );
    }
    let file = byShard.get(shard);
    if (!file) {
      try {
        file = await SafetensorsFile.open(join(dir, shard));
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
        throw new FormatError(join(dir, shard), "", `Missing shard listed in ${indexPath}`);
      }
      files.push(file);
      byShard.set(shard, file);
    }
    if (!file.tensors.has(name)) {
      throw new FormatError(
        file.path,
        name,
        `Missing tensor that ${indexPath} places in this shard`,
      );
    }
    owner.set(name, file);
  }
  return owner;
}

/** Checks every stored tensor against the config; returns the shapes of the ones used. */
function checkTensors(
  config: ModelConfig,
  owner: Map<string, SafetensorsFile>,
): Map<string, number[]> {
  const expected = expectedTensors(config);
  for (const [name, file] of owner) {
    if (expected.has(name) || IGNORED_TENSOR.test(name)) continue;
    // Some tied checkpoints also store a copy of the head; the embedding is used instead.
    if (name === tensorNames.lmHead && config.tiedEmbeddings) continue;
    throw new FormatError(
      file.path,
      name,
      "Unexpected tensor: this layout (for example an o_proj bias) is not supported for the configured architecture",
    );
  }
  for (const [name, shape] of expected) {
    const file = owner.get(name);
    if (!file) {
      const hint = name === tensorNames.lmHead
        ? ": set tie_word_embeddings to true if the head shares the embedding"
        : "";
      throw new FormatError(
        [...owner.values()][0]?.path ?? "model.safetensors",
        name,
        `Missing tensor${hint}`,
      );
    }
    const info = file.info(name);
    if (!FLOAT_DTYPES.has(info.dtype)) {
      throw new FormatError(
        file.path,
        name,
        `Unsupported dtype ${info.dtype}: expected F32, F16 or BF16`,
      );
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new FormatError(
        file.path,
        name,
        `Shape [${info.shape}] does not match [${shape}] implied by config.json`,
      );
    }
  }
  return expected;
}

/**
 * Reads the chat template from chat_template.jinja or tokenizer_config.json's
 * `chat_template` (a string, or a list of `{name, template}` from which "default" is used).
 *
 * @param dir Model directory.
 * @returns The template, or null when the directory has none.
 */
export async function readChatTemplate(dir: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(join(dir, "chat_template.jinja"));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const config = await readJsonIfPresent(join(dir, "tokenizer_config.json")) as
    | Record<string, unknown>
    | undefined;
  const template = config?.chat_template;
  if (typeof template === "string") return template;
  if (Array.isArray(template)) {
    const entry = template.find((t) => t?.name === "default") ?? template[0];
    if (typeof entry?.template === "string") return entry.template;
  }
  return null;
}

/**
 * Reads a model directory's tokenizer.json and tokenizer_config.json as text, and its chat
 * template, so a derived file (a quantized model) can carry them.
 *
 * @param dir Model directory.
 * @param chatTemplate The model's chat template, when it has one.
 * @returns The texts that exist; empty when the directory has no tokenizer.
 */
export async function readTokenizerText(
  dir: string,
  chatTemplate: string | null,
): Promise<
  { "tokenizer.json"?: string; "tokenizer_config.json"?: string; chat_template?: string }
> {
  const text: {
    "tokenizer.json"?: string;
    "tokenizer_config.json"?: string;
    chat_template?: string;
  } = {};
  for (const name of ["tokenizer.json", "tokenizer_config.json"] as const) {
    try {
      text[name] = await Deno.readTextFile(join(dir, name));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  if (chatTemplate) text.chat_template = chatTemplate;
  return text;
}
