/**
 * `--codebook-scope auto`: quantizes the model once per codebook scope (layer, block, type,
 * model) at the requested bits, in memory, and keeps the scope whose summed Fisher-weighted
 * error over the layers is lowest. The error is the one `layerErrors` computes
 * (src/quantize/layer_report.ts): sum_r G_rr e_r^T A e_r per layer with the K-FAC metric,
 * or sum_rj D_rj E_rj^2 with the empirical one, on the calibration statistics.
 *
 * Every candidate meets the target bits on its own, so the comparison is at equal budget.
 * NOTE: this costs one full quantization per scope (four in all).
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import type { ScopePass } from "./quantize_layers.ts";
import { CODEBOOK_SCOPES, type CodebookScope } from "./scope.ts";

/** One row of the comparison: a scope and what it achieved, or why it was skipped. */
export interface ScopeChoice {
  /** Codebook scope tried. */
  scope: CodebookScope;
  /** Summed Fisher-weighted error, or null when skipped. */
  fisherError: number | null;
  /** Bits per weight over the quantized layers, or null when skipped. */
  bpw: number | null;
  /** Bytes of all codebooks (the layers' own plus the shared ones), or null when skipped. */
  codebookBytes: number | null;
  /** Reason the scope could not be used at these settings (for example bits too low). */
  skipped?: string;
}

/** The chosen pass and the table that justified it. */
export interface ScopeSelection {
  best: ScopePass;
  table: ScopeChoice[];
}

/**
 * Runs `quantize` for every scope and keeps the pass with the lowest Fisher-weighted error
 * (ties go to the narrower scope). A scope whose settings are impossible (a UsageError, for
 * example --bits below what its codebooks need) is skipped and listed with the reason.
 *
 * @param quantize Runs one pass with a scope.
 * @throws {UsageError} When every scope is skipped.
 */
export async function selectCodebookScope(
  quantize: (scope: CodebookScope) => Promise<ScopePass>,
): Promise<ScopeSelection> {
  let best: ScopePass | null = null;
  const table: ScopeChoice[] = [];
  for (const scope of CODEBOOK_SCOPES) {
    let pass: ScopePass;
    try {
      pass = await quantize(scope);
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      table.push({
        scope,
        fisherError: null,
        bpw: null,
        codebookBytes: null,
        skipped: err.message,
      });
      continue;
    }
    if (pass.fisherError === null) {
      throw new UsageError(
        "--codebook-scope auto needs statistics for every layer: pass --fisher with a file from deno task calibrate",
      );
    }
    table.push({
      scope,
      fisherError: pass.fisherError,
      bpw: pass.bpw,
      codebookBytes: pass.results.reduce((n, r) => n + r.bytes.codebooks, 0) + pass.sharedBytes,
    });
    if (!best || pass.fisherError < best.fisherError!) best = pass;
  }
  if (!best) {
    throw new UsageError(
      `--codebook-scope auto found no usable scope: ${
        table.map((t) => `${t.scope}: ${t.skipped}`).join("; ")
      }`,
    );
  }
  return { best, table };
}

/**
 * Formats the comparison as a small table plus one line saying what was chosen and why.
 *
 * @example
 * ```ts
 * import { formatScopeTable } from "./auto_scope.ts";
 * const text = formatScopeTable([
 *   { scope: "layer", fisherError: 2, bpw: 2.95, codebookBytes: 100 },
 *   { scope: "model", fisherError: 1, bpw: 2.99, codebookBytes: 10 },
 * ], "model", 3);
 * if (!text.includes("chose model")) throw new Error();
 * ```
 * @param table Rows from {@linkcode selectCodebookScope}.
 * @param chosen The scope kept.
 * @param bits The requested bits per weight.
 */
export function formatScopeTable(
  table: ScopeChoice[],
  chosen: CodebookScope,
  bits: number,
): string {
  const lines = ["scope   Fisher error  bpw     codebook bytes"];
  for (const row of table) {
    if (row.skipped !== undefined) {
      lines.push(`${row.scope.padEnd(8)}skipped: ${row.skipped}`);
      continue;
    }
    lines.push(
      `${row.scope.padEnd(8)}${row.fisherError!.toExponential(4).padEnd(14)}${
        row.bpw!.toFixed(4).padEnd(8)
      }${row.codebookBytes}`,
    );
  }
  const best = table.find((t) => t.scope === chosen)!;
  const others = table.filter((t) => t.scope !== chosen && t.fisherError !== null);
  const runnerUp = others.sort((a, b) => a.fisherError! - b.fisherError!)[0];
  const margin = runnerUp
    ? `; the next best, ${runnerUp.scope}, is ${
      (runnerUp.fisherError! / best.fisherError!).toFixed(2)
    }x higher`
    : "";
  lines.push(
    `codebook scope auto chose ${chosen}: lowest Fisher-weighted error at --bits ${bits}${margin}`,
  );
  return lines.join("\n");
}
