/**
 * GGUF header parsing and validation: magic, version, counts against named limits and the
 * file size, every metadata value type, duplicate keys and tensor names, dimensions,
 * tensor types, block divisibility, alignment, and tensor extents inside the data section
 * without overlap. Nothing is allocated from a count before it is checked.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import {
  GGML_TYPES,
  GGML_UNSUPPORTED_NAMES,
  type GgmlType,
  ggmlTypeById,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_SCALAR_BYTES,
  GGUF_VERSIONS,
  type GgufEntry,
  GgufType,
  type GgufTypeId,
  type GgufValue,
} from "./gguf_types.ts";

/** Most tensors accepted (the largest released models have a few thousand). */
const MAX_TENSORS = 1 << 20;
/** Most metadata entries accepted. */
const MAX_METADATA = 1 << 20;
/** Maximum string length in bytes (chat templates reach tens of kilobytes). */
const MAX_STRING_BYTES = 16 * 2 ** 20;
/** Most dimensions of a tensor, as ggml's GGML_MAX_DIMS. */
const MAX_DIMS = 4;

/** One tensor's validated entry. */
export interface GgufTensorInfo {
  /** GGUF tensor name. */
  name: string;
  /** ggml dimensions, innermost first (ne0 is the row length). */
  dims: number[];
  /** Stored type. */
  type: GgmlType;
  /** Absolute byte offset in the file. */
  offset: number;
  /** Stored bytes. */
  byteLength: number;
  /** Number of values. */
  count: number;
}

/** Signals that the header continues beyond the bytes read so far. */
export class NeedMoreBytes extends Error {}

/** Sequential little-endian reader over the header bytes read so far. */
class Cursor {
  pos = 0;
  #view: DataView;
  #bytes: Uint8Array;
  #complete: boolean;
  #path: string;
  #fileSize: number;

  constructor(path: string, bytes: Uint8Array, complete: boolean, fileSize: number) {
    this.#path = path;
    this.#fileSize = fileSize;
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#complete = complete;
  }

  get remaining(): number {
    return this.#bytes.length - this.pos;
  }

  need(n: number, field: string): void {
    if (this.pos + n <= this.#bytes.length) return;
    if (!this.#complete && this.pos + n <= this.#fileSize) throw new NeedMoreBytes();
    throw new FormatError(
      this.#path,
      field,
      `Needs ${n} bytes at byte ${this.pos} but the file has ${this.#fileSize}: the file is truncated`,
    );
  }

  u32(field: string): number {
    this.need(4, field);
    this.pos += 4;
    return this.#view.getUint32(this.pos - 4, true);
  }

  /** Reads a u64 that must fit a safe integer. */
  u64(field: string): number {
    this.need(8, field);
    this.pos += 8;
    const v = this.#view.getBigUint64(this.pos - 8, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new FormatError(this.#path, field, `Value ${v} is out of range`);
    }
    return Number(v);
  }

  string(field: string): string {
    const length = this.u64(field);
    if (length > MAX_STRING_BYTES) {
      throw new FormatError(
        this.#path,
        field,
        `String of ${length} bytes exceeds the ${MAX_STRING_BYTES}-byte limit`,
      );
    }
    this.need(length, field);
    this.pos += length;
    return new TextDecoder().decode(this.#bytes.subarray(this.pos - length, this.pos));
  }

  scalar(type: number, field: string): GgufValue {
    this.need(GGUF_SCALAR_BYTES[type], field);
    const v = this.#view, p = this.pos;
    this.pos += GGUF_SCALAR_BYTES[type];
    switch (type) {
      case GgufType.UINT8:
        return v.getUint8(p);
      case GgufType.INT8:
        return v.getInt8(p);
      case GgufType.UINT16:
        return v.getUint16(p, true);
      case GgufType.INT16:
        return v.getInt16(p, true);
      case GgufType.UINT32:
        return v.getUint32(p, true);
      case GgufType.INT32:
        return v.getInt32(p, true);
      case GgufType.FLOAT32:
        return v.getFloat32(p, true);
      case GgufType.BOOL: {
        const b = v.getUint8(p);
        if (b > 1) {
          throw new FormatError(this.#path, field, `Invalid bool byte ${b}: expected 0 or 1`);
        }
        return b === 1;
      }
      case GgufType.UINT64:
        return safeNumber(v.getBigUint64(p, true));
      case GgufType.INT64:
        return safeNumber(v.getBigInt64(p, true));
      default:
        return v.getFloat64(p, true);
    }
  }
}

function safeNumber(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v;
}

/** A validated GGUF header. */
export interface ParsedHeader {
  version: number;
  metadata: Map<string, GgufEntry>;
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
}

/**
 * Parses and validates a GGUF header.
 *
 * @param path File named in errors.
 * @param bytes The first bytes of the file.
 * @param complete Whether `bytes` contains the whole file.
 * @param size File size in bytes.
 * @throws {NeedMoreBytes} When the header continues past `bytes`; retry with more.
 * @throws {FormatError} When the header is invalid.
 */
export function parseHeader(
  path: string,
  bytes: Uint8Array,
  complete: boolean,
  size: number,
): ParsedHeader {
  const c = new Cursor(path, bytes, complete, size);
  const magic = c.u32("magic");
  if (magic !== GGUF_MAGIC) {
    throw new FormatError(
      path,
      "magic",
      `Wrong magic 0x${magic.toString(16).padStart(8, "0")}: expected "GGUF" (0x${
        GGUF_MAGIC.toString(16)
      }); the file is not GGUF`,
    );
  }
  const version = c.u32("version");
  if (!GGUF_VERSIONS.includes(version)) {
    const hint = (version & 0xffff) === 0 ? " (a big-endian file, which is not supported)" : "";
    throw new FormatError(
      path,
      "version",
      `Unsupported version ${version}${hint}: expected ${GGUF_VERSIONS.join(" or ")}`,
    );
  }
  const tensorCount = c.u64("tensor_count");
  const kvCount = c.u64("metadata_kv_count");
  // Each tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes, each entry 8 + 4 + 1.
  if (tensorCount > MAX_TENSORS || tensorCount * 32 > size) {
    throw new FormatError(
      path,
      "tensor_count",
      `${tensorCount} tensors exceed the limit of ${MAX_TENSORS} or what a file of ${size} bytes can hold: the file is truncated or corrupt`,
    );
  }
  if (kvCount > MAX_METADATA || kvCount * 13 > size) {
    throw new FormatError(
      path,
      "metadata_kv_count",
      `${kvCount} entries exceed the limit of ${MAX_METADATA} or what a file of ${size} bytes can hold: the file is truncated or corrupt`,
    );
  }

  const metadata = new Map<string, GgufEntry>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata entry ${i} key`);
    if (metadata.has(key)) throw new FormatError(path, key, "Duplicate metadata key");
    metadata.set(key, readEntry(c, path, key));
  }

  const alignmentEntry = metadata.get("general.alignment");
  const alignment = alignmentEntry === undefined ? GGUF_DEFAULT_ALIGNMENT : alignmentEntry.value;
  if (
    (alignmentEntry && alignmentEntry.type !== GgufType.UINT32) || typeof alignment !== "number" ||
    alignment <= 0 || (alignment & (alignment - 1)) !== 0
  ) {
    throw new FormatError(
      path,
      "general.alignment",
      `Invalid alignment ${alignment}: expected a power of two stored as u32`,
    );
  }

  const raw: { name: string; dims: number[]; type: GgmlType; relative: number; count: number }[] =
    [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`tensor ${i} name`);
    if (names.has(name)) throw new FormatError(path, name, "Duplicate tensor name");
    names.add(name);
    const nDims = c.u32(name);
    if (nDims < 1 || nDims > MAX_DIMS) {
      throw new FormatError(path, name, `${nDims} dimensions: expected 1 to ${MAX_DIMS}`);
    }
    const dims: number[] = [];
    let count = 1;
    for (let d = 0; d < nDims; d++) {
      const ne = c.u64(name);
      count *= ne;
      if (ne < 1 || !Number.isSafeInteger(count)) {
        throw new FormatError(path, name, `Invalid dimension ${ne} at index ${d}`);
      }
      dims.push(ne);
    }
    const typeId = c.u32(name);
    const type = ggmlTypeById(typeId);
    if (!type) {
      const known = GGML_UNSUPPORTED_NAMES[typeId];
      throw new FormatError(
        path,
        name,
        `Unsupported tensor type ${
          known ?? `id ${typeId}`
        }: expected F32, F16, BF16 or Q8_0 (re-convert the model with one of them)`,
      );
    }
    if (dims[0] % GGML_TYPES[type].blockSize !== 0) {
      throw new FormatError(
        path,
        name,
        `Row length ${dims[0]} is not a multiple of the ${type} block size ${
          GGML_TYPES[type].blockSize
        }`,
      );
    }
    const relative = c.u64(name);
    if (relative % alignment !== 0) {
      throw new FormatError(
        path,
        name,
        `Data offset ${relative} is not a multiple of the alignment ${alignment}`,
      );
    }
    raw.push({ name, dims, type, relative, count });
  }

  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensorInfo>();
  for (const t of raw) {
    const { blockSize, blockBytes } = GGML_TYPES[t.type];
    const byteLength = (t.count / blockSize) * blockBytes;
    const offset = dataStart + t.relative;
    if (offset + byteLength > size) {
      throw new FormatError(
        path,
        t.name,
        `Tensor ends at byte ${
          offset + byteLength
        } beyond the file size ${size}: the file is truncated`,
      );
    }
    tensors.set(t.name, {
      name: t.name,
      dims: t.dims,
      type: t.type,
      offset,
      byteLength,
      count: t.count,
    });
  }
  checkNoOverlap(path, tensors);
  return { version, metadata, tensors, alignment };
}

function readEntry(c: Cursor, path: string, key: string): GgufEntry {
  const type = c.u32(key);
  if (type === GgufType.STRING) return { type, value: c.string(key) };
  if (type === GgufType.ARRAY) {
    const itemType = c.u32(key);
    const length = c.u64(key);
    if (itemType === GgufType.ARRAY) {
      throw new FormatError(path, key, "Nested arrays are not supported");
    }
    const itemBytes = itemType === GgufType.STRING ? 8 : GGUF_SCALAR_BYTES[itemType];
    if (itemBytes === undefined) {
      throw new FormatError(path, key, `Invalid array item type ${itemType}: expected 0 to 12`);
    }
    // Check against the bytes left before allocating, so a corrupt length cannot exhaust memory.
    c.need(length * itemBytes, key);
    const value: GgufValue[] = new Array(length);
    for (let i = 0; i < length; i++) {
      value[i] = itemType === GgufType.STRING ? c.string(key) : c.scalar(itemType, key);
    }
    return { type, itemType: itemType as GgufTypeId, value };
  }
  if (GGUF_SCALAR_BYTES[type] === undefined) {
    throw new FormatError(path, key, `Invalid value type ${type}: expected 0 to 12`);
  }
  return { type: type as GgufTypeId, value: c.scalar(type, key) };
}

function checkNoOverlap(path: string, tensors: Map<string, GgufTensorInfo>): void {
  const sorted = [...tensors.values()].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i - 1].offset + sorted[i - 1].byteLength > sorted[i].offset) {
      throw new FormatError(
        path,
        sorted[i].name,
        `Tensor data overlaps tensor ${sorted[i - 1].name}`,
      );
    }
  }
}
