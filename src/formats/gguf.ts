/**
 * GGUF reader. `GgufFile.open` validates the whole header before it reads any tensor.
 * The checks cover magic, version, counts (against named limits and the file size), value
 * types, duplicates, dimensions, tensor types, alignment and tensor extents. Tensors are
 * then read lazily one at a time and converted to f32 (F32, F16, BF16 and Q8_0).
 *
 * The checks live in `gguf_header.ts`; `gguf_model.ts` maps the container to a model
 * description.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { checkFinite } from "../model/model.ts";
import { decodeToF32 } from "./dtype.ts";
import { dequantizeQ8_0 } from "./q8_0.ts";
import {
  type GgufTensorInfo,
  NeedMoreBytes,
  type ParsedHeader,
  parseHeader,
} from "./gguf_header.ts";
import type { GgufEntry, GgufValue } from "./gguf_types.ts";

export type { GgufTensorInfo } from "./gguf_header.ts";

/** Largest header read into memory (vocabularies of 256k tokens with merges take about 20 MB). */
const MAX_HEADER_BYTES = 512 * 2 ** 20;
/** Size of the first header read. It doubles while the header is longer. */
const INITIAL_HEADER_READ = 4 * 2 ** 20;

/**
 * An open GGUF file: validated metadata and tensor entries, with lazy tensor reads.
 *
 * @example
 * ```ts ignore
 * const gguf = await GgufFile.open("model.gguf");
 * console.log(gguf.metadata.get("general.architecture")?.value);
 * const embed = await gguf.readF32("token_embd.weight");
 * gguf.close();
 * ```
 */
export class GgufFile {
  /** Path the file was opened from. */
  readonly path: string;
  /** Format version (2 or 3). */
  readonly version: number;
  /** Metadata entries in file order. */
  readonly metadata: ReadonlyMap<string, GgufEntry>;
  /** Tensor entries by GGUF name, in file order. */
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  /** Data-section alignment in bytes. */
  readonly alignment: number;
  #file: Deno.FsFile;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, file: Deno.FsFile, parsed: ParsedHeader) {
    this.path = path;
    this.#file = file;
    this.version = parsed.version;
    this.metadata = parsed.metadata;
    this.tensors = parsed.tensors;
    this.alignment = parsed.alignment;
  }

  /**
   * Opens and validates a GGUF file without reading tensor data.
   *
   * @param path File path.
   * @throws {FormatError} When the header is truncated, malformed, uses an unsupported
   *   type or places a tensor outside the file.
   */
  static async open(path: string): Promise<GgufFile> {
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      let want = Math.min(size, INITIAL_HEADER_READ);
      for (;;) {
        const bytes = new Uint8Array(want);
        await file.seek(0, Deno.SeekMode.Start);
        let read = 0;
        while (read < want) {
          const n = await file.read(bytes.subarray(read));
          if (n === null) break;
          read += n;
        }
        try {
          return new GgufFile(
            path,
            file,
            parseHeader(path, bytes.subarray(0, read), want === size, size),
          );
        } catch (err) {
          if (!(err instanceof NeedMoreBytes)) throw err;
          if (want >= MAX_HEADER_BYTES) {
            throw new FormatError(
              path,
              "header",
              `Header exceeds the ${MAX_HEADER_BYTES}-byte limit`,
            );
          }
          want = Math.min(size, want * 2, MAX_HEADER_BYTES);
        }
      }
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /**
   * Returns a metadata value, or undefined when the key is absent.
   *
   * @param key Metadata key.
   */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(key)?.value;
  }

  /**
   * Reads tensor `name` and converts it to f32, rejecting NaN and infinity.
   *
   * @param name GGUF tensor name.
   * @returns Values in ggml order: row-major with ne0 as the row length.
   * @throws {FormatError} When the tensor is missing, unreadable or not finite.
   */
  async readF32(name: string): Promise<Float32Array> {
    const info = this.tensors.get(name);
    if (!info) throw new FormatError(this.path, name, "Missing tensor");
    // Reads share one handle (seek, then read), so concurrent calls run one at a time.
    const task = this.#queue.then(() => this.#readBytes(info));
    this.#queue = task.catch(() => {});
    const bytes = await task;
    const data = info.type === "Q8_0"
      ? dequantizeQ8_0(bytes, info.count)
      : decodeToF32(bytes, info.type);
    checkFinite(this.path, name, data);
    return data;
  }

  async #readBytes(info: GgufTensorInfo): Promise<Uint8Array> {
    const bytes = new Uint8Array(info.byteLength);
    await this.#file.seek(info.offset, Deno.SeekMode.Start);
    let read = 0;
    while (read < bytes.length) {
      const n = await this.#file.read(bytes.subarray(read));
      if (n === null) {
        throw new FormatError(this.path, info.name, "Unexpected end of file while reading tensor");
      }
      read += n;
    }
    return bytes;
  }

  /** Closes the file handle. */
  close(): void {
    this.#file.close();
  }
}
