/**
 * The pipeline manifest (DIR/manifest.json): the tool versions, the resolved settings,
 * every input with its SHA-256, and per step its inputs, settings, output files, timing
 * and result, plus the summary rows. A later run reads it to decide which steps it can
 * reuse.
 *
 * @module
 */
import { join } from "node:path";
import { FormatError } from "../errors.ts";
import { writeTextFileAtomic } from "../util/atomic_write.ts";
import type { FileFingerprint } from "./file_hash.ts";
import type { ResolvedPipelineOptions } from "./options.ts";
import type { ResultRow } from "./summary.ts";
import denoConfig from "../../deno.json" with { type: "json" };

/** Value of the manifest's `format` field. */
export const MANIFEST_FORMAT = "rsavq-pipeline-manifest";
/** Manifest version this code reads and writes. */
export const MANIFEST_VERSION = 1;
/** File name of the manifest inside the output folder. */
export const MANIFEST_FILE = "manifest.json";

/** Versions of the software that produced a manifest. */
export interface ToolVersions {
  /** Package name from deno.json. */
  package: string;
  /** Package version from deno.json; part of every step's key. */
  version: string;
  /** Deno runtime version. */
  deno: string;
  /** V8 version of the runtime. */
  v8: string;
  /** TypeScript version of the runtime. */
  typescript: string;
}

/** One finished step. */
export interface StepRecord {
  /** SHA-256 of the package version, the settings, the inputs' digests and the upstream keys. */
  key: string;
  /** Files read, by role ("model", "fisher", "plan", ...). */
  inputs: Record<string, FileFingerprint>;
  /** Settings that change the step's output. */
  settings: Record<string, unknown>;
  /** Steps whose outputs this one reads. */
  after: string[];
  /** Files written, by name relative to the output folder (paths in the fingerprints are too). */
  outputs: Record<string, FileFingerprint>;
  /** Wall-clock seconds of the run that produced the outputs. */
  seconds: number;
  /** When that run finished (ISO 8601). */
  finishedAt: string;
  /** Step-specific result (losses, bits per weight, evaluation figures). */
  result: unknown;
}

/** Summary of the latest run. */
export interface RunRecord {
  /** When the run started (ISO 8601). */
  startedAt: string;
  /** Wall-clock seconds of the whole run. */
  seconds: number;
  /** Steps taken from an earlier run, in order. */
  reused: string[];
  /** Steps run, in order. */
  ran: string[];
}

/** Contents of manifest.json. */
export interface Manifest {
  /** Always {@linkcode MANIFEST_FORMAT}. */
  format: typeof MANIFEST_FORMAT;
  /** Always {@linkcode MANIFEST_VERSION}. */
  version: typeof MANIFEST_VERSION;
  /** Software that wrote the manifest. */
  tool: ToolVersions;
  /** Options with defaults filled in. */
  settings: ResolvedPipelineOptions;
  /** The model and data files given, fingerprinted. */
  inputs: { model: FileFingerprint; calibData: FileFingerprint[]; evalData: FileFingerprint[] };
  /** Steps by name, in the order they ran. */
  steps: Record<string, StepRecord>;
  /** Summary table rows: the original model first, then every method at every bit width. */
  results: ResultRow[];
  /** The latest run. */
  run: RunRecord;
}

/**
 * Returns the versions of this package and of the Deno runtime.
 *
 * @example
 * ```ts
 * import { toolVersions } from "./manifest.ts";
 * if (toolVersions().deno !== Deno.version.deno) throw new Error();
 * ```
 */
export function toolVersions(): ToolVersions {
  return {
    package: denoConfig.name,
    version: denoConfig.version,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
  };
}

/**
 * Reads DIR/manifest.json, or returns null when the folder has none.
 *
 * @param dir Output folder.
 * @throws {FormatError} When the file exists but is not a manifest of this version.
 */
export async function readManifest(dir: string): Promise<Manifest | null> {
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FormatError(
      path,
      "",
      `Invalid JSON: ${(err as Error).message}; delete the file to start the pipeline over`,
    );
  }
  const m = value as Partial<Manifest> | null;
  if (m?.format !== MANIFEST_FORMAT) {
    throw new FormatError(
      path,
      "format",
      `Expected "${MANIFEST_FORMAT}", got ${
        JSON.stringify(m?.format)
      }: --out must be a pipeline folder or a new one`,
    );
  }
  if (m.version !== MANIFEST_VERSION) {
    throw new FormatError(
      path,
      "version",
      `Expected ${MANIFEST_VERSION}, got ${JSON.stringify(m.version)}: use a new --out folder`,
    );
  }
  if (typeof m.steps !== "object" || m.steps === null || Array.isArray(m.steps)) {
    throw new FormatError(
      path,
      "steps",
      "Expected an object of step records: delete the file to start over",
    );
  }
  return m as Manifest;
}

/**
 * Writes DIR/manifest.json atomically.
 *
 * @param dir Output folder.
 * @param manifest Manifest to write.
 */
export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeTextFileAtomic(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + "\n");
}
