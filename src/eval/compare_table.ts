/**
 * Markdown rendering of a {@linkcode CompareResult}: a short description of how the numbers
 * were measured, then one table row per method and target with the best perplexity and
 * mean KL divergence of each target in bold.
 *
 * @module
 */
import { basename } from "node:path";
import type { CompareResult, CompareRow } from "./compare.ts";

/** Context printed above the table. */
export interface CompareTableContext {
  /** The command that produced the result, shown verbatim. */
  command?: string;
  /** Machine and adapter description. */
  machine?: string;
}

const DASH = "—";

/**
 * Renders the comparison as Markdown.
 *
 * @example
 * ```ts ignore
 * await Deno.writeTextFile("compare.md", formatCompareTable(result, { command: "deno task compare ..." }));
 * ```
 * @param result Rows and settings from {@linkcode compareQuantizers}.
 * @param context Command and machine lines.
 * @returns A Markdown section ending with a newline.
 */
export function formatCompareTable(
  result: CompareResult,
  context: CompareTableContext = {},
): string {
  const full = result.rows.find((r) => r.method === "full")?.result;
  const lines: string[] = [`### Quantizer comparison on ${basename(result.model)}`, ""];
  if (context.command) lines.push(`- Command: \`${context.command}\``);
  if ("fisher" in result.calibration) {
    lines.push(`- Calibration: statistics file ${result.calibration.fisher}`);
  } else {
    lines.push(
      `- Calibration: ${result.calibration.tokens} tokens sampled from the full model with seed ` +
        `${result.calibration.seed}, in sequences of ${result.ctx} tokens (${
          result.calibrateSeconds.toFixed(1)
        } s)`,
    );
  }
  const scored = full ? `, ${full.windows} windows, ${full.tokens} scored tokens` : "";
  lines.push(
    `- Evaluation: ${result.evaluation.tokens} held-out tokens sampled from the full model with seed ` +
      `${result.evaluation.seed}, windows of ${result.ctx} tokens${scored}. KL is KL(P_full || P_quantized) ` +
      "in nats per token; top-1 is the share of positions where both models rank the same token first",
    `- bpw counts the stored indices, codebooks, scales and permutations of the quantized linear layers; ` +
      "embeddings, norms and the output head stay unquantized",
    `- Engine: ${result.engine}${context.machine ? `; machine: ${context.machine}` : ""}`,
  );
  const zeroShot = result.rows.find((r) => r.zeroShot)?.zeroShot;
  if (zeroShot) {
    lines.push(
      `- Zero-shot: acc and acc_norm are unweighted means over ${zeroShot.tasks} tasks ` +
        `(${zeroShot.questions} questions), each choice scored by its summed log-likelihood`,
    );
  }
  const extraHeader = zeroShot ? " acc | acc_norm |" : "";
  const extraAlign = zeroShot ? " ---: | ---: |" : "";
  lines.push(
    "",
    `| method | target bits | bpw | ppl | KL mean | KL p99 | top-1 | quantize s |${extraHeader}`,
    `| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |${extraAlign}`,
  );

  const best = bestPerTarget(result.rows);
  for (const row of result.rows) {
    const cells = formatRow(row, best.get(row.targetBits));
    lines.push(zeroShot ? `${cells} ${formatZeroShot(row)}` : cells);
  }
  return lines.join("\n") + "\n";
}

/** Lowest perplexity and mean KL among the successful rows of each target. */
function bestPerTarget(rows: CompareRow[]): Map<number | null, { ppl: number; kld: number }> {
  const best = new Map<number | null, { ppl: number; kld: number }>();
  for (const row of rows) {
    if (!row.result || row.targetBits === null) continue;
    const current = best.get(row.targetBits) ?? { ppl: Infinity, kld: Infinity };
    best.set(row.targetBits, {
      ppl: Math.min(current.ppl, row.result.ppl),
      kld: Math.min(current.kld, row.result.kld_mean ?? Infinity),
    });
  }
  return best;
}

function formatRow(row: CompareRow, best: { ppl: number; kld: number } | undefined): string {
  const target = row.targetBits === null ? DASH : String(row.targetBits);
  const bpw = row.bpw === null ? DASH : row.bpw.toFixed(3);
  const seconds = row.quantizeSeconds === null ? DASH : row.quantizeSeconds.toFixed(1);
  if (!row.result) {
    const message = (row.error ?? "no result").replaceAll("|", "\\|").replaceAll("\n", " ");
    return `| ${row.method} | ${target} | ${bpw} | failed: ${message} | ${DASH} | ${DASH} | ${DASH} | ${seconds} |`;
  }
  const r = row.result;
  const ppl = emphasize(r.ppl.toFixed(2), best !== undefined && r.ppl === best.ppl);
  const kld = r.kld_mean === undefined
    ? DASH
    : emphasize(r.kld_mean.toFixed(4), best !== undefined && r.kld_mean === best.kld);
  const p99 = r.kld_p99 === undefined ? DASH : r.kld_p99.toFixed(4);
  const top1 = r.top1_agreement === undefined ? DASH : `${(100 * r.top1_agreement).toFixed(1)}%`;
  return `| ${row.method} | ${target} | ${bpw} | ${ppl} | ${kld} | ${p99} | ${top1} | ${seconds} |`;
}

function formatZeroShot(row: CompareRow): string {
  if (!row.zeroShot) return `${DASH} | ${DASH} |`;
  const percent = (x: number) => `${(100 * x).toFixed(1)}%`;
  return `${percent(row.zeroShot.acc)} | ${percent(row.zeroShot.acc_norm)} |`;
}

function emphasize(text: string, bold: boolean): string {
  return bold ? `**${text}**` : text;
}
