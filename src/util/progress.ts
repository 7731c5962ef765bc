/**
 * The one progress reporter that tasks configure: done/total, rate and time left on
 * stderr, redrawn in place on a terminal, a plain line every few seconds otherwise, and
 * nothing when quiet.
 *
 * @module
 */

/** Options for {@linkcode Progress}. */
export interface ProgressOptions {
  /** Print nothing. Default false. */
  quiet?: boolean;
  /** Unit named in the rate, for example "tokens" or "sequences". Default "items". */
  unit?: string;
  /** Minimum seconds between plain (non-terminal) lines. Default 5. */
  intervalSeconds?: number;
}

/**
 * Progress of a job of known size, reported on stderr.
 *
 * @example Count to three quietly
 * ```ts
 * import { Progress } from "./progress.ts";
 * const p = new Progress("demo", 3, { quiet: true });
 * for (let i = 0; i < 3; i++) p.advance(1);
 * p.finish();
 * if (p.done !== 3) throw new Error("miscounted");
 * ```
 */
export class Progress {
  /** Job name, shown first on the line. */
  readonly label: string;
  /** Number of units in the whole job. */
  readonly total: number;
  /** Units finished so far. */
  done = 0;
  #start = performance.now();
  #lastPrint = 0;
  #lastPrinted = -1;
  #quiet: boolean;
  #unit: string;
  #interval: number;
  #tty: boolean;

  /**
   * Starts a progress report.
   *
   * @param label What is being done, shown first on the line.
   * @param total Number of units in the whole job.
   * @param options Quiet mode, unit name and print interval.
   */
  constructor(label: string, total: number, options: ProgressOptions = {}) {
    this.label = label;
    this.total = total;
    this.#quiet = options.quiet ?? false;
    this.#unit = options.unit ?? "items";
    this.#interval = (options.intervalSeconds ?? 5) * 1000;
    this.#tty = Deno.stderr.isTerminal();
  }

  /**
   * Adds `n` finished units and prints when due.
   *
   * @param n Units finished since the last call.
   * @param note Optional text appended to the line (a layer name, a loss).
   */
  advance(n = 1, note = ""): void {
    this.done += n;
    const now = performance.now();
    if (this.#quiet) return;
    if (this.#tty || now - this.#lastPrint >= this.#interval || this.done >= this.total) {
      this.#lastPrint = now;
      this.#lastPrinted = this.done;
      this.#print(this.#line(now, note));
    }
  }

  /** Prints the final line (with a newline on a terminal). */
  finish(note = ""): void {
    if (this.#quiet) return;
    // A plain (non-terminal) log already has the final line unless a note was added.
    if (!this.#tty && this.#lastPrinted === this.done && !note) return;
    this.#print(this.#line(performance.now(), note));
    if (this.#tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }

  /** Seconds since the reporter was created. */
  get elapsedSeconds(): number {
    return (performance.now() - this.#start) / 1000;
  }

  #line(now: number, note: string): string {
    const seconds = (now - this.#start) / 1000;
    const rate = seconds > 0 ? this.done / seconds : 0;
    const left = rate > 0 ? (this.total - this.done) / rate : NaN;
    const eta = Number.isFinite(left) ? formatDuration(left) : "?";
    const tail = note ? `  ${note}` : "";
    return `${this.label}: ${this.done}/${this.total}  ${rate.toFixed(1)} ${this.#unit}/s  ` +
      `${formatDuration(seconds)} elapsed, ${eta} left${tail}`;
  }

  #print(line: string): void {
    const text = this.#tty ? `\r\x1b[2K${line}` : `${line}\n`;
    Deno.stderr.writeSync(new TextEncoder().encode(text));
  }
}

/**
 * Formats seconds as `1h02m`, `3m05s` or `12s`.
 *
 * @param seconds Non-negative duration.
 */
export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s >= 3600) {
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}
