/**
 * safetensors reader and writer. The reader validates the whole header (offsets in
 * range, no overlap, sizes matching shapes and dtypes, total against the file size)
 * before it reads any tensor, then reads tensors lazily one at a time.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}`,
 * then the data section that `data_offsets` index.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { decodeToF32, type DType, DTYPE_BYTES } from "./dtype.ts";
import { writeFileAtomic } from "../util/atomic_write.ts";

/** Largest header accepted (100 MB, as the reference implementation limits it). */
const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's entry in a safetensors header. */
export interface TensorInfo {
  /** Element type. */
  dtype: DType;
  /** Shape, outermost first. */
  shape: number[];
  /** Byte offset of the tensor within the file (data section start included). */
  offset: number;
  /** Bytes the tensor occupies. */
  byteLength: number;
}

/** A tensor to write. */
export interface TensorToWrite {
  /** Element type as stored. */
  dtype: DType;
  /** Dimensions, outermost first (row-major). */
  shape: number[];
  /** Raw little-endian bytes, `product(shape) * DTYPE_BYTES[dtype]` long. */
  data: Uint8Array;
}

/**
 * An open safetensors file: its validated header and lazy access to its tensors.
 *
 * @example Write then read back
 * ```ts
 * import { SafetensorsFile, writeSafetensors } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * const data = new Uint8Array(new Float32Array([1, 2]).buffer);
 * await writeSafetensors(path, { x: { dtype: "F32", shape: [2], data } }, { note: "demo" });
 * const file = await SafetensorsFile.open(path);
 * const x = await file.readF32("x");
 * file.close();
 * if (x[1] !== 2) throw new Error("bad round trip");
 * ```
 */
export class SafetensorsFile {
  /** Path the file was opened from. */
  readonly path: string;
  /** Validated tensor entries by name. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** String metadata from `__metadata__` (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  #file: Deno.FsFile;
  /** Tail of the read queue: seek-then-read on one handle must not interleave. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(
    path: string,
    file: Deno.FsFile,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
  ) {
    this.path = path;
    this.#file = file;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /**
   * Opens and validates a safetensors file without reading tensor data.
   *
   * @param path File path.
   * @throws {FormatError} When the header is truncated, malformed or inconsistent.
   */
  static async open(path: string): Promise<SafetensorsFile> {
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      const { tensors, metadata } = await parseHeader(path, file, size);
      return new SafetensorsFile(path, file, tensors, metadata);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /**
   * Returns the entry of tensor `name`.
   *
   * @param name Tensor name.
   * @throws {FormatError} When the tensor is missing.
   */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new FormatError(this.path, name, "Missing tensor");
    return info;
  }

  /**
   * Reads tensor `name`'s raw bytes.
   *
   * @param name Tensor name.
   */
  readBytes(name: string): Promise<Uint8Array> {
    const info = this.info(name);
    const result = this.#queue.then(() => this.#readAt(name, info));
    this.#queue = result.catch(() => {});
    return result;
  }

  async #readAt(name: string, info: TensorInfo): Promise<Uint8Array> {
    const bytes = new Uint8Array(info.byteLength);
    await this.#file.seek(info.offset, Deno.SeekMode.Start);
    let read = 0;
    while (read < bytes.length) {
      const n = await this.#file.read(bytes.subarray(read));
      if (n === null) {
        throw new FormatError(this.path, name, "Unexpected end of file while reading tensor");
      }
      read += n;
    }
    return bytes;
  }

  /**
   * Reads a floating-point tensor and converts it to f32.
   *
   * @param name Tensor name (dtype F32, F16 or BF16).
   */
  async readF32(name: string): Promise<Float32Array> {
    const info = this.info(name);
    if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16") {
      throw new FormatError(
        this.path,
        name,
        `Unsupported dtype ${info.dtype}: expected F32, F16 or BF16`,
      );
    }
    return decodeToF32(await this.readBytes(name), info.dtype);
  }

  /** Closes the file handle. */
  close(): void {
    this.#file.close();
  }
}

async function readExact(file: Deno.FsFile, bytes: Uint8Array): Promise<boolean> {
  let read = 0;
  while (read < bytes.length) {
    const n = await file.read(bytes.subarray(read));
    if (n === null) return false;
    read += n;
  }
  return true;
}

async function parseHeader(path: string, file: Deno.FsFile, size: number) {
  const lengthBytes = new Uint8Array(8);
  if (size < 8 || !(await readExact(file, lengthBytes))) {
    throw new FormatError(path, "", `File is ${size} bytes, too short for a safetensors header`);
  }
  const headerLength = Number(new DataView(lengthBytes.buffer).getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > size) {
    throw new FormatError(
      path,
      "header length",
      `Header length ${headerLength} exceeds the file size ${size} or the ${MAX_HEADER_BYTES}-byte limit: the file is truncated or not safetensors`,
    );
  }
  const headerBytes = new Uint8Array(headerLength);
  await readExact(file, headerBytes);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(headerBytes));
  } catch (err) {
    throw new FormatError(path, "header", `Invalid JSON: ${(err as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new FormatError(path, "header", "Expected a JSON object");
  }
  const dataStart = 8 + headerLength;
  return {
    tensors: parseEntries(path, header, dataStart, size),
    metadata: parseMetadata(path, header),
  };
}

function parseMetadata(path: string, header: Record<string, unknown>): Record<string, string> {
  const raw = header["__metadata__"];
  if (raw === undefined) return {};
  if (typeof raw !== "object" || raw === null) {
    throw new FormatError(path, "__metadata__", "Expected an object");
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== "string") {
      throw new FormatError(path, `__metadata__.${k}`, "Expected a string value");
    }
    out[k] = v;
  }
  return out;
}

function parseEntries(
  path: string,
  header: Record<string, unknown>,
  dataStart: number,
  size: number,
) {
  const tensors = new Map<string, TensorInfo>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = entry?.dtype as DType;
    if (!(typeof dtype === "string" && dtype in DTYPE_BYTES)) {
      throw new FormatError(
        path,
        name,
        `Unsupported dtype ${JSON.stringify(entry?.dtype)}: expected one of ${
          Object.keys(DTYPE_BYTES).join(", ")
        }`,
      );
    }
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new FormatError(
        path,
        name,
        `Invalid shape ${JSON.stringify(shape)}: expected non-negative integers`,
      );
    }
    const offsets = entry.data_offsets;
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) =>
        Number.isSafeInteger(d) && d >= 0
      ) || offsets[1] < offsets[0]
    ) {
      throw new FormatError(path, name, `Invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const count = shape.reduce((a: number, b: number) => a * b, 1);
    const byteLength = offsets[1] - offsets[0];
    if (byteLength !== count * DTYPE_BYTES[dtype]) {
      throw new FormatError(
        path,
        name,
        `data_offsets span ${byteLength} bytes but shape [${shape}] of ${dtype} needs ${
          count * DTYPE_BYTES[dtype]
        }`,
      );
    }
    if (dataStart + offsets[1] > size) {
      throw new FormatError(
        path,
        name,
        `Tensor ends at byte ${
          dataStart + offsets[1]
        } beyond the file size ${size}: the file is truncated`,
      );
    }
    tensors.set(name, {
      dtype,
      shape: shape as number[],
      offset: dataStart + offsets[0],
      byteLength,
    });
  }
  checkNoOverlap(path, tensors);
  return tensors;
}

function checkNoOverlap(path: string, tensors: Map<string, TensorInfo>): void {
  const sorted = [...tensors.entries()].sort((a, b) => a[1].offset - b[1].offset);
  for (let i = 1; i < sorted.length; i++) {
    const [prevName, prev] = sorted[i - 1];
    if (prev.offset + prev.byteLength > sorted[i][1].offset) {
      throw new FormatError(path, sorted[i][0], `Tensor data overlaps tensor ${prevName}`);
    }
  }
}

/**
 * Writes tensors and string metadata to a safetensors file, atomically (temporary name,
 * then rename). Tensors are stored in the order given, each 8-byte aligned.
 *
 * @param path Output path.
 * @param tensors Tensors by name.
 * @param metadata String metadata stored under `__metadata__`.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata: Record<string, string> = {},
): Promise<void> {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header["__metadata__"] = metadata;
  let offset = 0;
  const chunks: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.byteLength !== count * DTYPE_BYTES[t.dtype]) {
      throw new Error(
        `Tensor ${name}: ${t.data.byteLength} bytes given, shape [${t.shape}] of ${t.dtype} needs ${
          count * DTYPE_BYTES[t.dtype]
        }`,
      );
    }
    const padding = (8 - (t.data.byteLength % 8)) % 8;
    header[name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.data.byteLength],
    };
    chunks.push(t.data);
    if (padding) chunks.push(new Uint8Array(padding));
    offset += t.data.byteLength + padding;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces so the data section starts 8-byte aligned.
  const headerBytes = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20);
  headerBytes.set(json);
  const lengthBytes = new Uint8Array(8);
  new DataView(lengthBytes.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  await writeFileAtomic(path, [lengthBytes, headerBytes, ...chunks]);
}
