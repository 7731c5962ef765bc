/**
 * Runs pipeline steps with caching. A step's key is the SHA-256 of the package version,
 * its settings, its inputs' digests and the upstream steps' keys. The step is reused when
 * the previous manifest has a record with the same key, its output files still have the
 * recorded digests, and no step it depends on was redone in this run. Otherwise it runs,
 * and so does everything downstream of it.
 *
 * @module
 */
import { join } from "node:path";
import { type FileFingerprint, type FileHasher, sha256Json } from "./file_hash.ts";
import type { StepRecord } from "./manifest.ts";

/** Description of one step: the files it reads and writes, its settings and its body. */
export interface StepSpec {
  /** Unique step name, for example "quantize-rsavq-2". */
  name: string;
  /** Files read, by role. */
  inputs: Record<string, string>;
  /** Settings that change the outputs (JSON values). */
  settings: Record<string, unknown>;
  /** Names of earlier steps whose outputs this step reads. */
  after: string[];
  /** Files the step writes, relative to the output folder. */
  outputs: string[];
  /** Produces the outputs and returns the step's result (a JSON value). */
  run: () => Promise<unknown>;
}

/** Outcome of {@linkcode StepRunner.run}. */
export interface StepOutcome {
  /** The record now in the manifest. */
  record: StepRecord;
  /** Whether the outputs came from an earlier run. */
  reused: boolean;
}

/**
 * Runs steps in order over one output folder, reusing what an earlier run left.
 *
 * @example
 * ```ts ignore
 * const runner = new StepRunner(dir, previous?.steps ?? {}, hasher, "0.1.0", console.error);
 * const { reused } = await runner.run({ name: "calibrate", inputs: { model }, settings: {},
 *   after: [], outputs: ["fisher.safetensors"], run: () => calibrateStep() });
 * ```
 */
export class StepRunner {
  /** Records of every step run or reused so far, in order. */
  readonly records: Record<string, StepRecord> = {};
  /** Names of steps taken from the earlier run. */
  readonly reused: string[] = [];
  /** Names of steps run in this run. */
  readonly ran: string[] = [];
  #dir: string;
  #previous: Record<string, StepRecord>;
  #hasher: FileHasher;
  #version: string;
  #log: (line: string) => void;

  /**
   * Creates a runner.
   *
   * @param dir Output folder.
   * @param previous Step records of the earlier run ({} for none).
   * @param hasher Hasher shared with the pipeline (it remembers digests).
   * @param version Package version, part of every key.
   * @param log Receives one line per step.
   */
  constructor(
    dir: string,
    previous: Record<string, StepRecord>,
    hasher: FileHasher,
    version: string,
    log: (line: string) => void,
  ) {
    this.#dir = dir;
    this.#previous = previous;
    this.#hasher = hasher;
    this.#version = version;
    this.#log = log;
  }

  /**
   * Reuses or runs one step and records it.
   *
   * @param spec The step.
   * @throws {Error} When a step named in `spec.after` has not been run or reused before.
   */
  async run(spec: StepSpec): Promise<StepOutcome> {
    const inputs: Record<string, FileFingerprint> = {};
    for (const [role, path] of Object.entries(spec.inputs)) {
      inputs[role] = await this.#hasher.hash(path);
    }
    const upstream = spec.after.map((name) => {
      const record = this.records[name];
      if (!record) throw new Error(`Step ${spec.name} runs after ${name}, which has not run yet`);
      return record.key;
    });
    const key = sha256Json({
      version: this.#version,
      settings: spec.settings,
      inputs: Object.fromEntries(Object.entries(inputs).map(([role, f]) => [role, f.sha256])),
      upstream,
    });

    const previous = this.#previous[spec.name];
    const upstreamRedone = spec.after.some((name) => this.ran.includes(name));
    if (
      previous && previous.key === key && !upstreamRedone &&
      await this.#outputsIntact(spec, previous)
    ) {
      this.records[spec.name] = previous;
      this.reused.push(spec.name);
      this.#log(`${spec.name}: reused ${spec.outputs.join(", ")} (inputs and settings unchanged)`);
      return { record: previous, reused: true };
    }

    const reason = !previous
      ? "no earlier run"
      : upstreamRedone
      ? "an upstream step was redone"
      : previous.key !== key
      ? "inputs or settings changed"
      : "outputs missing or changed";
    this.#log(`${spec.name}: running (${reason})`);
    const start = performance.now();
    const result = await spec.run();
    const seconds = (performance.now() - start) / 1000;
    const outputs: Record<string, FileFingerprint> = {};
    for (const name of spec.outputs) {
      outputs[name] = { ...(await this.#hasher.hash(join(this.#dir, name))), path: name };
    }
    const record: StepRecord = {
      key,
      inputs,
      settings: spec.settings,
      after: spec.after,
      outputs,
      seconds,
      finishedAt: new Date().toISOString(),
      result: result ?? null,
    };
    this.records[spec.name] = record;
    this.ran.push(spec.name);
    this.#log(`${spec.name}: done in ${seconds.toFixed(1)} s`);
    return { record, reused: false };
  }

  async #outputsIntact(spec: StepSpec, previous: StepRecord): Promise<boolean> {
    for (const name of spec.outputs) {
      const recorded = previous.outputs[name];
      if (!recorded) return false;
      try {
        const now = await this.#hasher.hash(join(this.#dir, name));
        if (now.sha256 !== recorded.sha256) return false;
      } catch {
        return false;
      }
    }
    return true;
  }
}
