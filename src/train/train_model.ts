/**
 * The whole `deno task train` job: load text, split off the held-out part, train a
 * byte-level BPE tokenizer on the training part, tokenize, train a Llama model, and write
 * a Hugging Face directory with a model card.
 *
 * Work files (tokenizer.json, the token streams and checkpoint.safetensors) live in
 * `OUT.work/` beside the output, so an interrupted run resumes with `resume: true` on the
 * very same tokens. The output directory itself appears only when training is done.
 *
 * @module
 */
import { join } from "node:path";
import { expectedTensors, type ModelConfig } from "../model/config.ts";
import { MemoryWeightStore } from "../model/model.ts";
import { type HfDtype, writeHf } from "../formats/hf_writer.ts";
import { HfTokenizer } from "../tokenizer/hf_tokenizer.ts";
import { UsageError } from "../errors.ts";
import { writeFileAtomic, writeTextFileAtomic } from "../util/atomic_write.ts";
import {
  type CorpusDocument,
  loadNpmCorpus,
  loadTextFiles,
  NPM_TEXT_SOURCES,
  splitHeldOut,
} from "../data/corpus.ts";
import { bpeTokenizerJson, END_OF_TEXT, trainBpe } from "./bpe_trainer.ts";
import { type GradientEngine, ReferenceGradientEngine } from "./gradient_engine.ts";
import {
  evalWindows,
  initParams,
  meanLoss,
  train,
  type TrainOptions,
  type TrainResult,
} from "./trainer.ts";
import { modelCard } from "./model_card.ts";

/** A plain-text chat template for a base model: "User: ...\nAssistant: ...". */
export const CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}" +
  "{{ message['role'] | capitalize }}: {{ message['content'] | trim }}\n{% endfor %}" +
  "{% if add_generation_prompt %}Assistant:{% endif %}";

/** Model shape of {@linkcode trainModel}. */
export interface ModelShape {
  /** BPE vocabulary size, special tokens included. */
  vocabSize: number;
  /** d_model (a multiple of 256 for llama.cpp comparisons; smaller values are allowed). */
  dim: number;
  /** Transformer blocks. */
  layers: number;
  /** Query heads. */
  heads: number;
  /** Key/value heads. */
  kvHeads: number;
  /** SwiGLU hidden size. */
  hidden: number;
}

/** Options of {@linkcode trainModel}. */
export interface TrainModelOptions extends ModelShape, Omit<TrainOptions, "checkpointPath"> {
  /** "npm" for the public-domain npm corpus, or text files. */
  dataSource: "npm" | readonly string[];
  /** Output Hugging Face directory (must not exist). */
  out: string;
  /** Stored dtype of model.safetensors (f16 halves the size on disk). Default "f32". */
  dtype?: HfDtype;
  /** Held-out windows of the final perplexity. Default 256. */
  finalEvalWindows?: number;
  /** Builds the gradient engine. Default: the TypeScript reference. */
  createEngine?: (
    config: ModelConfig,
    params: Map<string, Float32Array>,
  ) => Promise<GradientEngine>;
}

/** Result of {@linkcode trainModel}. */
export interface TrainModelResult extends TrainResult {
  /** Model config written to config.json. */
  config: ModelConfig;
  /** Training and held-out stream lengths in tokens. */
  tokens: { train: number; heldOut: number };
  /** Final held-out loss (nats per token) and its window count; null when stopped early. */
  heldOut: { loss: number; windows: number } | null;
}

/**
 * Runs the whole training job and writes the model to `options.out`.
 *
 * @example
 * ```ts ignore
 * await trainModel({ dataSource: "npm", vocabSize: 4096, dim: 256, layers: 4, heads: 4,
 *   kvHeads: 4, hidden: 768, seqLen: 128, batchSize: 8, steps: 1000, lr: 3e-3, warmup: 50,
 *   seed: 1, out: "/tmp/ref-model" });
 * ```
 * @param options Data, model shape, training settings and output path.
 * @throws {UsageError} When the output exists, or work files exist without `resume`.
 */
export async function trainModel(options: TrainModelOptions): Promise<TrainModelResult> {
  const out = options.out.replace(/\/+$/, "");
  const work = `${out}.work`;
  if (await exists(out)) {
    throw new UsageError(`Output ${out} already exists: remove it or choose another --out`);
  }
  if (await exists(join(work, "checkpoint.safetensors")) && !options.resume) {
    throw new UsageError(
      `Work folder ${work} contains a checkpoint: pass --resume to continue it, or remove the folder`,
    );
  }
  await Deno.mkdir(work, { recursive: true });
  const log = (line: string) => options.quiet || console.error(line);

  // tokenizer and token streams, reused on resume so the data cannot drift
  const tokenizerJson = await tokenizerFor(options, work, log);
  const tokenizer = HfTokenizer.fromJson(tokenizerJson, {}, join(work, "tokenizer.json"));
  const eot = tokenizer.tokenToId(END_OF_TEXT)!;
  const streams = await tokenStreams(options, work, tokenizer, eot, log);
  log(`tokens: train ${streams.train.length}, held-out ${streams.heldOut.length}`);

  const config: ModelConfig = {
    architecture: "llama",
    dim: options.dim,
    hiddenDim: options.hidden,
    nLayers: options.layers,
    nHeads: options.heads,
    nKvHeads: options.kvHeads,
    headDim: options.dim / options.heads,
    vocabSize: options.vocabSize,
    maxSeqLen: options.seqLen,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeStyle: "half",
    tiedEmbeddings: true,
    qkvBias: false,
    bosId: eot,
    eosIds: [eot],
  };
  if (!Number.isInteger(config.headDim) || config.headDim % 2 !== 0) {
    throw new UsageError(
      `--dim ${options.dim} / --heads ${options.heads} = ${config.headDim}: the head width must be an even integer`,
    );
  }
  if (options.heads % options.kvHeads !== 0) {
    throw new UsageError(`--kv-heads ${options.kvHeads} must divide --heads ${options.heads}`);
  }

  const params = initParams(config, options.seed);
  const engine = await (options.createEngine ?? ReferenceGradientEngine.create)(config, params);
  log(`gradient engine: ${engine.label}`);
  try {
    const data = { train: streams.train, heldOut: streams.heldOut, bosId: eot };
    const result = await train(engine, params, data, {
      ...options,
      checkpointPath: join(work, "checkpoint.safetensors"),
    });
    const tokens = { train: streams.train.length, heldOut: streams.heldOut.length };
    if (result.step < options.steps) return { ...result, config, tokens, heldOut: null };

    // final held-out perplexity over more windows than the periodic checks
    const windows = evalWindows(
      streams.heldOut,
      options.seqLen,
      eot,
      options.finalEvalWindows ?? 256,
    );
    const loss = await meanLoss(engine, windows, options.batchSize);
    log(
      `final held-out loss ${loss.toFixed(4)}, perplexity ${
        Math.exp(loss).toFixed(2)
      } over ${windows.length} windows of ${options.seqLen} tokens`,
    );
    const heldOut = { loss, windows: windows.length };
    const card = modelCard({
      options,
      config,
      tokens,
      result,
      heldOut,
      sources: sourceLines(options),
      engine: engine.label,
      dtype: options.dtype ?? "f32",
    });
    const shapes = expectedTensors(config);
    const tensors = new Map(
      [...params].map(([name, data]) => [name, { shape: shapes.get(name)!, data }]),
    );
    const encoder = new TextEncoder();
    await writeHf({ config, weights: new MemoryWeightStore(out, tensors) }, out, {
      dtype: options.dtype ?? "f32",
      quiet: options.quiet,
      files: {
        "tokenizer.json": encoder.encode(JSON.stringify(tokenizerJson)),
        "tokenizer_config.json": encoder.encode(
          JSON.stringify(tokenizerConfig(options.seqLen), null, 2) + "\n",
        ),
        "README.md": encoder.encode(card),
      },
    });
    return { ...result, config, tokens, heldOut };
  } finally {
    engine.dispose();
  }
}

/** tokenizer_config.json: special tokens and the chat template. */
function tokenizerConfig(seqLen: number): Record<string, unknown> {
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: END_OF_TEXT,
    eos_token: END_OF_TEXT,
    unk_token: null,
    add_bos_token: false,
    add_eos_token: false,
    model_max_length: seqLen,
    clean_up_tokenization_spaces: false,
    added_tokens_decoder: {
      "0": {
        content: END_OF_TEXT,
        lstrip: false,
        normalized: false,
        rstrip: false,
        single_word: false,
        special: true,
      },
    },
    chat_template: CHAT_TEMPLATE,
  };
}

async function loadDocuments(source: TrainModelOptions["dataSource"]): Promise<CorpusDocument[]> {
  return source === "npm" ? await loadNpmCorpus() : await loadTextFiles(source);
}

/** Trains the tokenizer, or reads it back from the work folder on resume. */
async function tokenizerFor(
  options: TrainModelOptions,
  work: string,
  log: (s: string) => void,
): Promise<unknown> {
  const path = join(work, "tokenizer.json");
  if (options.resume && await exists(path)) return JSON.parse(await Deno.readTextFile(path));
  const { train } = splitHeldOut(await loadDocuments(options.dataSource));
  const bpe = trainBpe(train.map((d) => d.text), {
    vocabSize: options.vocabSize,
    quiet: options.quiet,
  });
  const json = bpeTokenizerJson(bpe);
  await writeTextFileAtomic(path, JSON.stringify(json));
  log(`tokenizer: ${bpe.vocab.length} tokens, ${bpe.merges.length} merges -> ${path}`);
  return json;
}

/** Tokenizes both parts (documents joined by end-of-text), or reads the cached streams. */
async function tokenStreams(
  options: TrainModelOptions,
  work: string,
  tokenizer: HfTokenizer,
  eot: number,
  log: (s: string) => void,
): Promise<{ train: Int32Array; heldOut: Int32Array }> {
  const paths = { train: join(work, "train.i32"), heldOut: join(work, "held_out.i32") };
  if (await exists(paths.train) && await exists(paths.heldOut)) {
    const read = async (p: string) => {
      const b = await Deno.readFile(p);
      return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    };
    return { train: await read(paths.train), heldOut: await read(paths.heldOut) };
  }
  const split = splitHeldOut(await loadDocuments(options.dataSource));
  log(`documents: train ${split.train.length}, held-out ${split.heldOut.length}`);
  const encode = (docs: CorpusDocument[]) => {
    const ids: number[] = [];
    for (const d of docs) {
      for (const id of tokenizer.encode(d.text)) ids.push(id);
      ids.push(eot);
    }
    return Int32Array.from(ids);
  };
  const streams = { train: encode(split.train), heldOut: encode(split.heldOut) };
  // Little-endian int32 files, the layout of every machine Deno runs on.
  await writeFileAtomic(paths.train, [new Uint8Array(streams.train.buffer)]);
  await writeFileAtomic(paths.heldOut, [new Uint8Array(streams.heldOut.buffer)]);
  return streams;
}

function sourceLines(options: TrainModelOptions): string[] {
  if (options.dataSource === "npm") {
    return NPM_TEXT_SOURCES.map((s) => `npm ${s.name}@${s.version}: ${s.content}`);
  }
  return options.dataSource.map((p) => `file ${p}`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
