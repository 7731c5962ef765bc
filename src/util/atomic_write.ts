/**
 * Writes an output file under a temporary name in the same folder and renames it into
 * place, so a crash or an error never leaves a partial or corrupt file at the final path.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";

/**
 * Writes `chunks` to `path` atomically: a temporary sibling is written, synced and renamed.
 *
 * @example Write a small file
 * ```ts
 * import { writeFileAtomic } from "./atomic_write.ts";
 * const path = await Deno.makeTempFile();
 * await writeFileAtomic(path, [new TextEncoder().encode("ok")]);
 * if (await Deno.readTextFile(path) !== "ok") throw new Error("not written");
 * ```
 * @param path Final path.
 * @param chunks Byte chunks written in order.
 */
export async function writeFileAtomic(path: string, chunks: Iterable<Uint8Array>): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${Deno.pid}.tmp`);
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    for (const chunk of chunks) await writeAll(file, chunk);
    await file.sync();
  } catch (err) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  file.close();
  await Deno.rename(tmp, path);
}

/**
 * Writes `text` to `path` atomically.
 *
 * @param path Final path.
 * @param text UTF-8 text.
 */
export async function writeTextFileAtomic(path: string, text: string): Promise<void> {
  await writeFileAtomic(path, [new TextEncoder().encode(text)]);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
}
