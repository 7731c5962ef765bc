/**
 * The Fisher statistics file ("rsavq-fisher", version 1): a safetensors file with five
 * (six with full G) F32 tensors per calibrated linear layer and string metadata. The
 * format is described in docs/fisher.md.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from "../formats/safetensors.ts";
import type { LinearStats } from "./accumulator.ts";

/** Value of the `format` metadata key. */
export const FISHER_FORMAT = "rsavq-fisher";
/** Value of the `version` metadata key this code writes and reads. */
export const FISHER_VERSION = "1";

/** Metadata of a statistics file (all stored as strings). */
export interface FisherMetadata {
  /** Path of the model the statistics were computed on. */
  model: string;
  /** Human-readable description of the calibration data. */
  data: string;
  /** Tokens per sequence. */
  seqLen: number;
  /** Number of sequences. */
  sequences: number;
  /** Number of tokens (sequences * seqLen). */
  tokens: number;
  /** Seed of the sampled data, or null for data read from files. */
  seed: number | null;
  /** Whether full G is stored. */
  fullG: boolean;
  /** Mean over sequences of the per-sequence mean cross-entropy (nats). */
  meanLoss: number;
  /**
   * Labels the backward pass used: "data" (the next tokens: G, grad_mean and fisher_diag
   * are the empirical Fisher's) or "model" (labels drawn from the model's own softmax with
   * `labelSeed`: the true Fisher's). Files without the key used the data, and so does a
   * writer that leaves it out.
   */
  labels?: FisherLabels;
  /** Seed of the drawn labels, or null (or absent) with labels "data". */
  labelSeed?: number | null;
}

/** Source of the labels of the calibration backward pass; see {@linkcode FisherMetadata}. */
export type FisherLabels = "data" | "model";

/** Statistics of one linear layer as read back, with its widths. */
export interface FisherLayer extends LinearStats {
  /** Input width n. */
  inDim: number;
  /** Output width m. */
  outDim: number;
}

/** A statistics file read into memory. */
export interface FisherStats {
  /** Parsed metadata. */
  metadata: FisherMetadata;
  /** Statistics by canonical layer prefix ("model.layers.0.self_attn.q_proj"), in file order. */
  layers: Map<string, FisherLayer>;
}

const SUFFIXES = ["A", "G_diag", "G", "grad_mean", "fisher_diag"] as const;

/**
 * Writes the statistics of every layer and the metadata, atomically.
 *
 * @param path Output path.
 * @param stats Statistics by layer prefix (the order is kept in the file).
 * @param metadata Run description.
 */
export async function writeFisherStats(
  path: string,
  stats: Map<string, LinearStats>,
  metadata: FisherMetadata,
): Promise<void> {
  const tensors: Record<string, TensorToWrite> = {};
  const f32 = (data: Float32Array, shape: number[]): TensorToWrite => ({
    dtype: "F32",
    shape,
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  });
  for (const [prefix, s] of stats) {
    const m = s.G_diag.length, n = Math.round(Math.sqrt(s.A.length));
    tensors[`${prefix}.A`] = f32(s.A, [n, n]);
    tensors[`${prefix}.G_diag`] = f32(s.G_diag, [m]);
    if (s.G) tensors[`${prefix}.G`] = f32(s.G, [m, m]);
    tensors[`${prefix}.grad_mean`] = f32(s.grad_mean, [m, n]);
    tensors[`${prefix}.fisher_diag`] = f32(s.fisher_diag, [m, n]);
  }
  await writeSafetensors(path, tensors, {
    format: FISHER_FORMAT,
    version: FISHER_VERSION,
    model: metadata.model,
    data: metadata.data,
    seq_len: String(metadata.seqLen),
    sequences: String(metadata.sequences),
    tokens: String(metadata.tokens),
    seed: metadata.seed === null ? "none" : String(metadata.seed),
    full_g: String(metadata.fullG),
    mean_loss: String(metadata.meanLoss),
    labels: metadata.labels ?? "data",
    label_seed: metadata.labelSeed == null ? "none" : String(metadata.labelSeed),
  });
}

/**
 * An open statistics file whose header and shapes are validated; layers are read lazily.
 *
 * @example Read one layer
 * ```ts ignore
 * const file = await FisherStatsFile.open("fisher.safetensors");
 * const q = await file.readLayer("model.layers.0.self_attn.q_proj");
 * file.close();
 * ```
 */
export class FisherStatsFile {
  /** Parsed metadata. */
  readonly metadata: FisherMetadata;
  /** Layer prefixes with their widths, in file order. */
  readonly layers: ReadonlyMap<string, { inDim: number; outDim: number }>;
  #file: SafetensorsFile;

  private constructor(
    file: SafetensorsFile,
    metadata: FisherMetadata,
    layers: Map<string, { inDim: number; outDim: number }>,
  ) {
    this.#file = file;
    this.metadata = metadata;
    this.layers = layers;
  }

  /**
   * Opens `path` and validates its metadata and every tensor's shape.
   *
   * @param path A file written by {@linkcode writeFisherStats}.
   * @throws {FormatError} When the file is not a version-1 statistics file or a tensor is missing or misshapen.
   */
  static async open(path: string): Promise<FisherStatsFile> {
    const file = await SafetensorsFile.open(path);
    try {
      const metadata = parseMetadata(path, file.metadata);
      const layers = validateLayers(path, file, metadata.fullG);
      return new FisherStatsFile(file, metadata, layers);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /**
   * Reads the statistics of one layer.
   *
   * @param prefix Canonical layer prefix.
   */
  async readLayer(prefix: string): Promise<FisherLayer> {
    const dims = this.layers.get(prefix);
    if (!dims) {
      throw new FormatError(
        this.#file.path,
        prefix,
        `No statistics for this layer: the file has ${this.layers.size} layers`,
      );
    }
    const read = (suffix: string) => this.#file.readF32(`${prefix}.${suffix}`);
    const layer: FisherLayer = {
      ...dims,
      A: await read("A"),
      G_diag: await read("G_diag"),
      grad_mean: await read("grad_mean"),
      fisher_diag: await read("fisher_diag"),
    };
    if (this.metadata.fullG) layer.G = await read("G");
    return layer;
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}

/**
 * Reads a whole statistics file into memory, validating metadata and shapes.
 *
 * @param path A file written by {@linkcode writeFisherStats} (`deno task calibrate`).
 * @returns Metadata and per-layer typed arrays.
 */
export async function readFisherStats(path: string): Promise<FisherStats> {
  const file = await FisherStatsFile.open(path);
  try {
    const layers = new Map<string, FisherLayer>();
    for (const prefix of file.layers.keys()) layers.set(prefix, await file.readLayer(prefix));
    return { metadata: file.metadata, layers };
  } finally {
    file.close();
  }
}

function parseMetadata(path: string, raw: Readonly<Record<string, string>>): FisherMetadata {
  if (raw.format !== FISHER_FORMAT) {
    throw new FormatError(
      path,
      "__metadata__.format",
      `Expected "${FISHER_FORMAT}", got ${
        JSON.stringify(raw.format)
      }: this is not a statistics file from deno task calibrate`,
    );
  }
  if (raw.version !== FISHER_VERSION) {
    throw new FormatError(
      path,
      "__metadata__.version",
      `Unsupported version ${
        JSON.stringify(raw.version)
      }: this reader supports version ${FISHER_VERSION}`,
    );
  }
  const int = (key: string) => {
    const v = Number(raw[key]);
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new FormatError(
        path,
        `__metadata__.${key}`,
        `Expected a non-negative integer, got ${JSON.stringify(raw[key])}`,
      );
    }
    return v;
  };
  if (raw.full_g !== "true" && raw.full_g !== "false") {
    throw new FormatError(
      path,
      "__metadata__.full_g",
      `Expected "true" or "false", got ${JSON.stringify(raw.full_g)}`,
    );
  }
  const labels = raw.labels ?? "data";
  if (labels !== "data" && labels !== "model") {
    throw new FormatError(
      path,
      "__metadata__.labels",
      `Expected "data" or "model", got ${JSON.stringify(raw.labels)}`,
    );
  }
  if (labels === "model" && raw.label_seed === undefined) {
    throw new FormatError(
      path,
      "__metadata__.label_seed",
      "Missing: a file with labels drawn from the model records their seed; recalibrate",
    );
  }
  return {
    labels,
    labelSeed: labels === "model" ? int("label_seed") : null,
    model: raw.model ?? "",
    data: raw.data ?? "",
    seqLen: int("seq_len"),
    sequences: int("sequences"),
    tokens: int("tokens"),
    seed: raw.seed === "none" || raw.seed === undefined ? null : int("seed"),
    fullG: raw.full_g === "true",
    meanLoss: Number(raw.mean_loss ?? NaN),
  };
}

function validateLayers(
  path: string,
  file: SafetensorsFile,
  fullG: boolean,
): Map<string, { inDim: number; outDim: number }> {
  const prefixes: string[] = [];
  for (const name of file.tensors.keys()) {
    if (!SUFFIXES.some((s) => name.endsWith(`.${s}`))) {
      throw new FormatError(
        path,
        name,
        `Unexpected tensor: statistics tensors end in .${SUFFIXES.join(", .")}`,
      );
    }
    if (name.endsWith(".A")) prefixes.push(prefixOf(name));
  }
  const layers = new Map<string, { inDim: number; outDim: number }>();
  for (const prefix of prefixes) {
    const shape = (suffix: string) => {
      const info = file.tensors.get(`${prefix}.${suffix}`);
      if (!info) {
        throw new FormatError(
          path,
          `${prefix}.${suffix}`,
          "Missing tensor: every layer needs A, G_diag, grad_mean and fisher_diag",
        );
      }
      if (info.dtype !== "F32") {
        throw new FormatError(path, `${prefix}.${suffix}`, `Expected dtype F32, got ${info.dtype}`);
      }
      return info.shape;
    };
    const a = shape("A"), gd = shape("G_diag");
    const n = a[0], m = gd[0];
    const expect = (suffix: string, want: number[]) => {
      const got = shape(suffix);
      if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
        throw new FormatError(
          path,
          `${prefix}.${suffix}`,
          `Shape [${got}] does not match [${want}] implied by A [${a}] and G_diag [${gd}]`,
        );
      }
    };
    expect("A", [n, n]);
    expect("G_diag", [m]);
    expect("grad_mean", [m, n]);
    expect("fisher_diag", [m, n]);
    if (fullG) expect("G", [m, m]);
    else if (file.tensors.has(`${prefix}.G`)) {
      throw new FormatError(path, `${prefix}.G`, "Present although metadata full_g is false");
    }
    layers.set(prefix, { inDim: n, outDim: m });
  }
  if (layers.size === 0) throw new FormatError(path, "", "The file contains no layer statistics");
  for (const name of file.tensors.keys()) {
    if (!layers.has(prefixOf(name))) {
      throw new FormatError(path, name, "Tensor belongs to no layer: its layer has no .A tensor");
    }
  }
  return layers;
}

/** Strips the statistic suffix (".A", ".G_diag", ...) from a tensor name. */
function prefixOf(name: string): string {
  return name.slice(0, name.lastIndexOf("."));
}
