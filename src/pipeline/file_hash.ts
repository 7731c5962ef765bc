/**
 * SHA-256 fingerprints of the files a pipeline reads and writes, streamed so that
 * multi-gigabyte checkpoints never sit in memory. A fingerprint records the size and
 * modification time too, so a later run can take the digest of an unchanged file from
 * the previous manifest instead of reading the file again.
 *
 * NOTE: an edit that keeps both the size and the modification time (for example a file
 * restored with its old timestamp) goes unnoticed, as in make and git's index.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join, relative } from "node:path";
import { FormatError } from "../errors.ts";

/** Bytes read per chunk while hashing. */
const CHUNK_BYTES = 1 << 22;

/** Identity of one file or folder at the time it was hashed. */
export interface FileFingerprint {
  /** Path as given (absolute or relative to the working folder). */
  path: string;
  /** Hex SHA-256 of the bytes; for a folder, of its files' relative paths and digests. */
  sha256: string;
  /** Size in bytes (for a folder, of all its files). */
  bytes: number;
  /** Modification time in milliseconds since the epoch (for a folder, of its newest file). */
  mtimeMs: number;
}

/**
 * Hashes files, reusing the digest of a file whose path, size and modification time
 * match a fingerprint it was given earlier.
 *
 * @example Hash a small file twice
 * ```ts
 * import { FileHasher } from "./file_hash.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "abc");
 * const first = await new FileHasher().hash(path);
 * const again = await new FileHasher([first]).hash(path);
 * if (first.sha256 !== "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") throw new Error();
 * if (again.sha256 !== first.sha256) throw new Error();
 * ```
 */
export class FileHasher {
  #known = new Map<string, FileFingerprint>();
  /** Files whose digest was computed (not taken from a known fingerprint) by this hasher. */
  hashedFiles = 0;

  /**
   * Creates a hasher that trusts the given fingerprints while size and time still match.
   *
   * @param known Fingerprints from a previous run.
   */
  constructor(known: Iterable<FileFingerprint> = []) {
    for (const f of known) this.#known.set(f.path, f);
  }

  /**
   * Fingerprints a file, or a folder (every file below it, in sorted order).
   *
   * @param path File or folder.
   * @throws {FormatError} When the path does not exist.
   */
  async hash(path: string): Promise<FileFingerprint> {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new FormatError(path, "", "File not found: check the path");
      }
      throw err;
    }
    if (info.isDirectory) return await this.#hashFolder(path);
    const mtimeMs = info.mtime?.getTime() ?? 0;
    const known = this.#known.get(path);
    if (known && known.bytes === info.size && known.mtimeMs === mtimeMs) return known;
    const fingerprint = { path, sha256: await sha256File(path), bytes: info.size, mtimeMs };
    this.hashedFiles++;
    this.#known.set(path, fingerprint);
    return fingerprint;
  }

  async #hashFolder(path: string): Promise<FileFingerprint> {
    const files: string[] = [];
    await listFiles(path, files);
    files.sort();
    const digest = createHash("sha256");
    let bytes = 0;
    let mtimeMs = 0;
    for (const file of files) {
      const f = await this.hash(file);
      digest.update(`${relative(path, file)}\0${f.sha256}\n`);
      bytes += f.bytes;
      mtimeMs = Math.max(mtimeMs, f.mtimeMs);
    }
    return { path, sha256: digest.digest("hex"), bytes, mtimeMs };
  }
}

/**
 * Computes the hex SHA-256 of a file, reading it in chunks.
 *
 * @param path File to hash.
 */
export async function sha256File(path: string): Promise<string> {
  const digest = createHash("sha256");
  const file = await Deno.open(path, { read: true });
  try {
    const buffer = new Uint8Array(CHUNK_BYTES);
    while (true) {
      const n = await file.read(buffer);
      if (n === null) break;
      digest.update(buffer.subarray(0, n));
    }
  } finally {
    file.close();
  }
  return digest.digest("hex");
}

/**
 * Computes the hex SHA-256 of a value's canonical JSON (object keys sorted), so equal
 * settings give equal digests whatever order their keys were written in.
 *
 * @example
 * ```ts
 * import { sha256Json } from "./file_hash.ts";
 * if (sha256Json({ a: 1, b: [2] }) !== sha256Json({ b: [2], a: 1 })) throw new Error();
 * ```
 * @param value JSON-compatible value.
 */
export function sha256Json(value: unknown): string {
  return createHash("sha256").update(canonicalJson(value)).digest("hex");
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => compareStrings(a, b));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

/** Orders strings by UTF-16 code units, the same on every locale. */
function compareStrings(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}

async function listFiles(folder: string, out: string[]): Promise<void> {
  for await (const entry of Deno.readDir(folder)) {
    const path = join(folder, entry.name);
    if (entry.isDirectory) await listFiles(path, out);
    else if (entry.isFile) out.push(path);
  }
}
