/**
 * Checks an output path before any work starts: its folder must exist, and it must not
 * name one of the run's input files, so a long job never ends in an error and never
 * replaces the data it was reading.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { UsageError } from "../errors.ts";

/**
 * Throws when `out` is one of `inputs` or its parent folder does not exist.
 *
 * @example
 * ```ts
 * import { checkOutputPath } from "./output_path.ts";
 * let rejected = false;
 * try { await checkOutputPath("model.bin", ["./model.bin"]); } catch { rejected = true; }
 * if (!rejected) throw new Error("an output equal to an input was accepted");
 * ```
 * @param out Output file or folder path.
 * @param inputs Paths the run reads (models, statistics, plans, data files); undefined entries are skipped.
 * @param flag Option name used in the message. Default "--out".
 * @throws {UsageError} Naming the path and the fix.
 */
export async function checkOutputPath(
  out: string,
  inputs: readonly (string | undefined)[],
  flag = "--out",
): Promise<void> {
  const target = await canonical(out);
  for (const input of inputs) {
    if (input === undefined) continue;
    if (target === await canonical(input)) {
      throw new UsageError(
        `${flag} ${out} is also an input of this run: choose another output path so the input is not replaced`,
      );
    }
  }
  const folder = dirname(resolve(out));
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(folder);
  } catch {
    throw new UsageError(`${flag} ${out}: folder ${folder} does not exist: create it first`);
  }
  if (!info.isDirectory) throw new UsageError(`${flag} ${out}: ${folder} is not a folder`);
}

/** Resolves symbolic links where the path exists, so two spellings of one file compare equal. */
async function canonical(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    return resolve(path);
  }
}
