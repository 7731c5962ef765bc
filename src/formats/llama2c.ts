/**
 * Reader for llama2.c checkpoints (legacy version 0, as `export.py --version 0` and the
 * original `run.c` use). The loaded model keeps llama2.c's adjacent-pair rotary
 * convention (`ropeStyle: "adjacent"`).
 *
 * Layout: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len), then f32 tensors: token_embedding [vocab, dim],
 * rms_att [layers, dim], wq [layers, dim, dim], wk [layers, kv_dim, dim],
 * wv [layers, kv_dim, dim], wo [layers, dim, dim], rms_ffn [layers, dim],
 * w1 [layers, hidden, dim], w2 [layers, dim, hidden], w3 [layers, hidden, dim],
 * rms_final [dim], freq_cis_real and freq_cis_imag [seq_len * head_dim / 2] each
 * (skipped: recomputed), and wcls [vocab, dim] only when vocab_size is negative.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { expectedTensors, type ModelConfig, tensorNames, validateConfig } from "../model/config.ts";
import { checkFinite, type LoadedModel, type WeightStore } from "../model/model.ts";

const HEADER_BYTES = 28;

/** Location of one canonical tensor in the file. */
interface Extent {
  shape: number[];
  /** Byte offset of the first element. */
  offset: number;
}

/**
 * Parses the 28-byte header into a config (adjacent rotary, theta 10000, eps 1e-5).
 *
 * @param path File path, for errors.
 * @param header The first 28 bytes.
 */
export function parseLlama2cHeader(path: string, header: Uint8Array): ModelConfig {
  if (header.length < HEADER_BYTES) {
    throw new FormatError(
      path,
      "header",
      `File is ${header.length} bytes, shorter than the 28-byte llama2.c header`,
    );
  }
  const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = Array.from(
    { length: 7 },
    (_, i) => view.getInt32(4 * i, true),
  );
  const config: ModelConfig = {
    architecture: "llama",
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    headDim: nHeads > 0 ? dim / nHeads : 0,
    vocabSize: Math.abs(vocab),
    maxSeqLen: seqLen,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeStyle: "adjacent",
    tiedEmbeddings: vocab > 0,
    qkvBias: false,
    bosId: 1,
    eosIds: [2],
  };
  validateConfig(config, path);
  return config;
}

function layout(config: ModelConfig): { extents: Map<string, Extent>; totalBytes: number } {
  const { nLayers, headDim, maxSeqLen } = config;
  const shapes = expectedTensors(config);
  const extents = new Map<string, Extent>();
  let offset = HEADER_BYTES;
  const place = (name: string) => {
    const shape = shapes.get(name)!;
    extents.set(name, { shape, offset });
    offset += 4 * shape.reduce((a, b) => a * b, 1);
  };
  const perLayer = (name: (l: number) => string) => {
    for (let l = 0; l < nLayers; l++) place(name(l));
  };
  place(tensorNames.embed);
  perLayer(tensorNames.attnNorm);
  perLayer((l) => tensorNames.linear(l, "self_attn.q_proj"));
  perLayer((l) => tensorNames.linear(l, "self_attn.k_proj"));
  perLayer((l) => tensorNames.linear(l, "self_attn.v_proj"));
  perLayer((l) => tensorNames.linear(l, "self_attn.o_proj"));
  perLayer(tensorNames.ffnNorm);
  perLayer((l) => tensorNames.linear(l, "mlp.gate_proj"));
  perLayer((l) => tensorNames.linear(l, "mlp.down_proj"));
  perLayer((l) => tensorNames.linear(l, "mlp.up_proj"));
  place(tensorNames.finalNorm);
  offset += 2 * 4 * (maxSeqLen * headDim / 2);
  if (!config.tiedEmbeddings) place(tensorNames.lmHead);
  return { extents, totalBytes: offset };
}

class Llama2cWeights implements WeightStore {
  readonly source: string;
  #file: Deno.FsFile;
  #extents: Map<string, Extent>;
  /** Tail of the read queue: seek-then-read on one handle must not interleave. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(source: string, file: Deno.FsFile, extents: Map<string, Extent>) {
    this.source = source;
    this.#file = file;
    this.#extents = extents;
  }

  names(): string[] {
    return [...this.#extents.keys()];
  }

  shape(name: string): number[] {
    return this.#extent(name).shape;
  }

  read(name: string): Promise<Float32Array> {
    const extent = this.#extent(name);
    const result = this.#queue.then(() => this.#readAt(name, extent));
    this.#queue = result.catch(() => {});
    return result;
  }

  async #readAt(name: string, { shape, offset }: Extent): Promise<Float32Array> {
    const bytes = new Uint8Array(4 * shape.reduce((a, b) => a * b, 1));
    await this.#file.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < bytes.length) {
      const n = await this.#file.read(bytes.subarray(done));
      if (n === null) throw new FormatError(this.source, name, "Unexpected end of file");
      done += n;
    }
    const data = new Float32Array(bytes.buffer);
    checkFinite(this.source, name, data);
    return data;
  }

  close(): void {
    this.#file.close();
  }

  #extent(name: string): Extent {
    const e = this.#extents.get(name);
    if (!e) throw new FormatError(this.source, name, "Missing tensor");
    return e;
  }
}

/**
 * Opens a llama2.c checkpoint, validating the header and the file size before any
 * tensor is read.
 *
 * @example
 * ```ts ignore
 * const model = await loadLlama2c("stories260K.bin");
 * console.log(model.config.dim); // 64
 * ```
 * @param path Path to the `.bin` file.
 * @throws {FormatError} On a bad header or a size that does not match it.
 */
export async function loadLlama2c(path: string): Promise<LoadedModel> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    const header = new Uint8Array(Math.min(size, HEADER_BYTES));
    await file.read(header);
    const config = parseLlama2cHeader(path, header);
    const { extents, totalBytes } = layout(config);
    if (size !== totalBytes) {
      throw new FormatError(
        path,
        "file size",
        `Header (dim ${config.dim}, hidden ${config.hiddenDim}, ${config.nLayers} layers, vocab ${config.vocabSize}, ` +
          `seq_len ${config.maxSeqLen}) implies ${totalBytes} bytes but the file has ${size}: it is truncated or not a legacy (version 0) llama2.c checkpoint`,
      );
    }
    return {
      path,
      format: "llama2c",
      config,
      weights: new Llama2cWeights(path, file, extents),
      tokenizer: null,
      chatTemplate: null,
    };
  } catch (err) {
    file.close();
    throw err;
  }
}
