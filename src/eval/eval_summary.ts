/**
 * Human-readable summaries that `deno task eval` prints without `--json`: perplexity and KL
 * divergence of a token evaluation, and zero-shot accuracy per task.
 *
 * @module
 */
import type { EvalResult } from "./evaluate.ts";
import type { ChoiceEvalResult } from "./zero_shot.ts";

/** Report fields shown besides the {@linkcode EvalResult}. */
export interface PerplexityReport {
  /** Model path. */
  model: string;
  /** Reference model path, or null. */
  ref: string | null;
  /** Forward engine. */
  engine: string;
  /** Data files, or a description of the sampled stream. */
  data: string | string[];
  /** Quantization method of a quantized model. */
  method?: string;
  /** Requested bpw of a quantized model. */
  target_bpw?: number;
  /** Achieved bpw of a quantized model. */
  bpw?: number;
}

/**
 * Formats a perplexity (and KL) evaluation as aligned lines.
 *
 * @param report Model, reference, engine, data and quantization fields.
 * @param r The evaluation.
 * @returns Lines joined with newlines, no trailing newline.
 */
export function formatPerplexitySummary(report: PerplexityReport, r: EvalResult): string {
  const data = Array.isArray(report.data) ? report.data.join(", ") : report.data;
  const pplError = (r.ppl * r.nll_stderr).toFixed(4);
  const lines = [
    `model    ${report.model} (${report.engine} engine)`,
    `data     ${data}: ${r.windows} windows of up to ${r.ctx} tokens`,
    `ppl      ${r.ppl.toFixed(4)} ± ${pplError}   (nll ${
      r.nll.toFixed(5)
    } nats/token over ${r.tokens} tokens)`,
  ];
  if (report.bpw !== undefined) {
    lines.push(
      `quant    ${report.method} at ${report.bpw.toFixed(4)} bpw (target ${report.target_bpw})`,
    );
  }
  if (report.ref !== null && r.kld_mean !== undefined) {
    const kld = [
      `mean ${r.kld_mean.toFixed(6)} ± ${r.kld_stderr!.toFixed(6)}`,
      `median ${r.kld_median!.toFixed(6)}`,
      `p99 ${r.kld_p99!.toFixed(6)}`,
      `max ${r.kld_max!.toFixed(6)}`,
    ];
    const top1 = `${(100 * r.top1_agreement!).toFixed(2)}% ± ${(100 * r.top1_stderr!).toFixed(2)}%`;
    lines.push(
      `ref      ${report.ref}: ppl ${r.ref_ppl!.toFixed(4)}`,
      `KLD      ${kld.join("   ")}`,
      `top-1    ${top1} agreement with the reference`,
    );
  }
  return lines.join("\n");
}

/**
 * Formats zero-shot accuracies as a table: one row per task and the unweighted average,
 * with the reference's accuracy and the paired difference when a reference was scored.
 *
 * @param model Model path.
 * @param r The evaluation.
 * @returns Lines joined with newlines, no trailing newline.
 */
export function formatChoiceSummary(model: string, r: ChoiceEvalResult): string {
  const percent = (x: number) => (100 * x).toFixed(2);
  const withError = (x: number, e: number) => `${percent(x)} ± ${percent(e)}`;
  const header = ["task", "n", "acc %", "acc_norm %"];
  if (r.comparison) header.push("ref acc %", "ref acc_norm %", "acc diff", "acc_norm diff");
  const rows: string[][] = [];
  for (const [i, t] of r.tasks.entries()) {
    const row = [
      t.task,
      String(t.questions),
      withError(t.acc, t.acc_stderr),
      withError(t.acc_norm, t.acc_norm_stderr),
    ];
    const d = r.comparison?.tasks[i];
    if (d) {
      row.push(percent(d.ref_acc), percent(d.ref_acc_norm));
      row.push(
        withError(d.acc_diff, d.acc_diff_stderr),
        withError(d.acc_norm_diff, d.acc_norm_diff_stderr),
      );
    }
    rows.push(row);
  }
  const a = r.average;
  const average = [
    `average of ${a.tasks}`,
    String(a.questions),
    withError(a.acc, a.acc_stderr),
    withError(a.acc_norm, a.acc_norm_stderr),
  ];
  if (r.comparison && r.ref) {
    const d = r.comparison.average;
    average.push(percent(r.ref.average.acc), percent(r.ref.average.acc_norm));
    average.push(
      withError(d.acc_diff, d.acc_diff_stderr),
      withError(d.acc_norm_diff, d.acc_norm_diff_stderr),
    );
  }
  rows.push(average);

  // left-align the task names, right-align the numbers
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c].length)));
  const line = (cells: string[]) =>
    cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(
      "  ",
    );
  return [`model  ${model}`, line(header), ...rows.map(line)].join("\n");
}
