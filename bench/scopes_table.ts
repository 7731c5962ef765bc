/**
 * Codebook-scope comparison: KL divergence and perplexity of the quantized model for each
 * codebook scope, method, vector length and target bits, in one command. A plain script
 * (not a `deno bench` file) that runs the toolkit's own tasks:
 *
 * 1. `deno task calibrate` once, on tokens sampled from the model with --calib-seed;
 * 2. per row `deno task quantize --codebook-scope S`;
 * 3. per row `deno task eval --ref MODEL --json` on held-out tokens sampled with
 *    --eval-seed, which must differ from --calib-seed.
 *
 * Usage (from the repository root):
 *   deno run -A bench/scopes_table.ts [--model PATH] [--methods vptq,rsavq] [--bits 2,3,4]
 *     [--vector-lengths 2,4] [--scopes layer,block,type,model] [--out docs/FILE.md]
 *
 * Prints a Markdown table on stdout (and writes it to --out when given); progress goes to
 * stderr.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

const HELP = `Usage: deno run -A bench/scopes_table.ts [options]

Options:
  --model PATH          model to quantize and reference (default ../shared/models/stories260K.bin)
  --fisher FILE         reuse this statistics file instead of calibrating
  --calib-tokens N      calibration tokens sampled from the model (default 8192)
  --calib-seed S        seed of the calibration stream (default 3)
  --eval-tokens N       held-out evaluation tokens (default 4096)
  --eval-seed S         seed of the evaluation stream, not --calib-seed (default 7)
  --ctx N               window length for calibration and evaluation (default 256)
  --methods LIST        comma-separated methods (default vptq,rsavq)
  --bits LIST           comma-separated target bits per weight (default 2,3,4)
  --vector-lengths LIST comma-separated vector lengths (default 2,4)
  --scopes LIST         comma-separated codebook scopes (default layer,block,type,model)
  --engine E            engine for calibrate and eval (default reference)
  --work-dir DIR        folder for the statistics and quantized files (default: a temporary one)
  --out FILE            also write the Markdown table to FILE
  --help                show this text`;

/** One measured row. */
interface Row {
  method: string;
  vectorLength: number;
  bits: number;
  scope: string;
  bpw: number;
  ppl: number;
  kld: number;
  top1: number;
  quantizeSeconds: number;
}

/** Runs `deno task NAME ARGS` in the repository root and returns its stdout; throws on failure. */
async function task(name: string, args: string[]): Promise<string> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", name, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await command.output();
  const text = new TextDecoder();
  if (code !== 0) {
    throw new Error(`deno task ${name} ${args.join(" ")} failed: ${text.decode(stderr).trim()}`);
  }
  return text.decode(stdout);
}

function list(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      model: { type: "string", default: "../shared/models/stories260K.bin" },
      fisher: { type: "string" },
      "calib-tokens": { type: "string", default: "8192" },
      "calib-seed": { type: "string", default: "3" },
      "eval-tokens": { type: "string", default: "4096" },
      "eval-seed": { type: "string", default: "7" },
      ctx: { type: "string", default: "256" },
      methods: { type: "string", default: "vptq,rsavq" },
      bits: { type: "string", default: "2,3,4" },
      "vector-lengths": { type: "string", default: "2,4" },
      scopes: { type: "string", default: "layer,block,type,model" },
      engine: { type: "string", default: "reference" },
      "work-dir": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  if (values["calib-seed"] === values["eval-seed"]) {
    throw new Error(
      "--eval-seed must differ from --calib-seed: evaluation tokens must be held out",
    );
  }
  const work = values["work-dir"] ?? await Deno.makeTempDir({ prefix: "scopes_table_" });
  await Deno.mkdir(work, { recursive: true });
  const model = values.model!, ctx = values.ctx!, engine = values.engine!;

  // Calibrate once (statistics A, G_diag, grad_mean, fisher_diag of every linear layer).
  let fisher = values.fisher;
  if (!fisher) {
    fisher = `${work}/fisher.safetensors`;
    console.error(
      `calibrating on ${values["calib-tokens"]} tokens sampled with seed ${values["calib-seed"]}`,
    );
    await task("calibrate", [
      "--model",
      model,
      "--sample-tokens",
      values["calib-tokens"]!,
      "--seed",
      values["calib-seed"]!,
      "--seq-len",
      ctx,
      "--engine",
      engine,
      "--quiet",
      "--out",
      fisher,
    ]);
  }

  const rows: Row[] = [];
  let refPpl = NaN;
  const combos = list(values.methods!).flatMap((method) =>
    list(values["vector-lengths"]!).flatMap((v) =>
      list(values.bits!).flatMap((bits) =>
        list(values.scopes!).map((scope) => ({ method, v, bits, scope }))
      )
    )
  );
  for (const [i, { method, v, bits, scope }] of combos.entries()) {
    const out = `${work}/${method}-v${v}-${bits}-${scope}.safetensors`;
    const t0 = performance.now();
    await task("quantize", [
      "--model",
      model,
      "--fisher",
      fisher,
      "--method",
      method,
      "--bits",
      bits,
      "--vector-length",
      v,
      "--codebook-scope",
      scope,
      "--quiet",
      "--out",
      out,
    ]);
    const quantizeSeconds = (performance.now() - t0) / 1000;
    const json = JSON.parse(
      await task("eval", [
        "--model",
        out,
        "--ref",
        model,
        "--sample-tokens",
        values["eval-tokens"]!,
        "--seed",
        values["eval-seed"]!,
        "--ctx",
        ctx,
        "--engine",
        engine,
        "--json",
        "--quiet",
      ]),
    );
    refPpl = json.ref_ppl;
    const row: Row = {
      method,
      vectorLength: Number(v),
      bits: Number(bits),
      scope,
      bpw: json.bpw,
      ppl: json.ppl,
      kld: json.kld_mean,
      top1: json.top1_agreement,
      quantizeSeconds,
    };
    rows.push(row);
    console.error(
      `[${i + 1}/${combos.length}] ${method} v${v} ${bits} bits ${scope}: ${
        row.bpw.toFixed(4)
      } bpw, PPL ${row.ppl.toFixed(2)}, KLD ${row.kld.toFixed(4)}`,
    );
    await Deno.remove(out);
  }

  const table = formatTable(rows, refPpl, {
    model,
    calib: `${values["calib-tokens"]} tokens sampled from the model, seed ${values["calib-seed"]}`,
    evaluation: `${values["eval-tokens"]} held-out tokens sampled from the model, seed ${
      values["eval-seed"]
    }, windows of ${ctx}`,
  });
  console.log(table);
  if (values.out) await Deno.writeTextFile(values.out, table + "\n");
}

/** Markdown table of the rows, then the best scope per (method, v, bits) and the better v. */
function formatTable(
  rows: Row[],
  refPpl: number,
  data: { model: string; calib: string; evaluation: string },
): string {
  const lines = [
    `Model ${data.model}; full-precision PPL ${refPpl.toFixed(3)}. Calibration: ${data.calib}. ` +
    `Evaluation: ${data.evaluation}. Embeddings, norms and head stay unquantized and are not counted in bpw.`,
    "",
    "| method | v | target bits | scope | bpw | PPL | KLD mean | top-1 agreement | quantize s |",
    "| ------ | - | ----------- | ----- | --- | --- | -------- | --------------- | ---------- |",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.method} | ${r.vectorLength} | ${r.bits} | ${r.scope} | ${r.bpw.toFixed(4)} | ${
        r.ppl.toFixed(2)
      } | ${r.kld.toFixed(4)} | ${r.top1.toFixed(4)} | ${r.quantizeSeconds.toFixed(1)} |`,
    );
  }

  // Best scope of each (method, v, bits), and which vector length gives the lower KLD.
  lines.push("", "Lowest KLD per method, vector length and bits:", "");
  const keyed = new Map<string, Row[]>();
  for (const r of rows) {
    const key = `${r.method} v${r.vectorLength} ${r.bits} bits`;
    keyed.set(key, [...(keyed.get(key) ?? []), r]);
  }
  for (const [key, group] of keyed) {
    const best = group.reduce((a, b) => (b.kld < a.kld ? b : a));
    lines.push(`- ${key}: ${best.scope} (KLD ${best.kld.toFixed(4)}, ${best.bpw.toFixed(4)} bpw)`);
  }
  const wins = new Map<number, number>();
  for (const r of rows) {
    const rivals = rows.filter((o) =>
      o.method === r.method && o.bits === r.bits && o.scope === r.scope &&
      o.vectorLength !== r.vectorLength
    );
    if (rivals.length && rivals.every((o) => r.kld < o.kld)) {
      wins.set(r.vectorLength, (wins.get(r.vectorLength) ?? 0) + 1);
    }
  }
  if (wins.size) {
    const parts = [...wins].sort((a, b) => a[0] - b[0]).map(([v, n]) => `v=${v} in ${n}`);
    lines.push(
      "",
      `Lower KLD at the same method, bits and scope: ${parts.join(", ")} comparisons.`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`scopes_table: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
