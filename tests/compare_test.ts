import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { compareQuantizers, type CompareResult } from "../src/eval/compare.ts";
import { formatCompareTable } from "../src/eval/compare_table.ts";
import type { EvalResult } from "../src/eval/evaluate.ts";
import { UsageError } from "../src/errors.ts";
import { STORIES_260K } from "./_helpers.ts";

const COMPARE_TASK = fileURLToPath(new URL("../tasks/compare.ts", import.meta.url));
const CHOICE_IDS = fileURLToPath(new URL("./fixtures/choice_ids.jsonl", import.meta.url));

/** Layer 0's linear layers: quantizing only these keeps the tests fast. */
const LAYER_0 = ["q_proj", "k_proj", "v_proj", "o_proj"].map((p) => `model.layers.0.self_attn.${p}`)
  .concat(["gate_proj", "up_proj", "down_proj"].map((p) => `model.layers.0.mlp.${p}`));

function evalResult(ppl: number, kld?: number): EvalResult {
  const result: EvalResult = {
    ppl,
    nll: Math.log(ppl),
    nll_stderr: 0.01,
    tokens: 254,
    windows: 2,
    ctx: 128,
  };
  if (kld !== undefined) {
    Object.assign(result, { kld_mean: kld, kld_p99: 10 * kld, top1_agreement: 0.5, ref_ppl: 10 });
  }
  return result;
}

Deno.test("formatCompareTable renders rows and marks the best", () => {
  const result: CompareResult = {
    model: "/models/stories260K.bin",
    ctx: 128,
    engine: "reference",
    calibration: { tokens: 256, seed: 1 },
    evaluation: { tokens: 256, seed: 2 },
    calibrateSeconds: 2.46,
    rows: [
      {
        method: "full",
        targetBits: null,
        bpw: null,
        quantizeSeconds: null,
        result: evalResult(10),
      },
      {
        method: "rtn",
        targetBits: 2,
        bpw: 1.99,
        quantizeSeconds: 0.12,
        result: evalResult(900, 5),
      },
      {
        method: "rsavq",
        targetBits: 2,
        bpw: 1.9551,
        quantizeSeconds: 4.04,
        result: evalResult(400.123, 4.25),
      },
      {
        method: "gptq",
        targetBits: 2,
        bpw: null,
        quantizeSeconds: null,
        error: "Target 2 | too low\nfor groups",
      },
      { method: "rtn", targetBits: 3, bpw: 2.48, quantizeSeconds: 0.1, result: evalResult(300, 3) },
    ],
  };
  const text = formatCompareTable(result, {
    command: "deno task compare --bits 2,3",
    machine: "test machine",
  });
  const lines = text.trimEnd().split("\n");

  assert.equal(lines[0], "### Quantizer comparison on stories260K.bin");
  assert.ok(lines.includes("- Command: `deno task compare --bits 2,3`"));
  assert.ok(
    text.includes(
      "256 tokens sampled from the full model with seed 1, in sequences of 128 tokens (2.5 s)",
    ),
  );
  assert.ok(text.includes("256 held-out tokens sampled from the full model with seed 2"));
  assert.ok(text.includes("2 windows, 254 scored tokens"));
  assert.ok(text.includes("- Engine: reference; machine: test machine"));
  assert.deepEqual(lines.slice(-7), [
    "| method | target bits | bpw | ppl | KL mean | KL p99 | top-1 | quantize s |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    "| full | — | — | 10.00 | — | — | — | — |",
    "| rtn | 2 | 1.990 | 900.00 | 5.0000 | 50.0000 | 50.0% | 0.1 |",
    "| rsavq | 2 | 1.955 | **400.12** | **4.2500** | 42.5000 | 50.0% | 4.0 |",
    "| gptq | 2 | — | failed: Target 2 \\| too low for groups | — | — | — | — |",
    "| rtn | 3 | 2.480 | **300.00** | **3.0000** | 30.0000 | 50.0% | 0.1 |",
  ]);
});

Deno.test("formatCompareTable adds zero-shot columns", () => {
  const zeroShot = { acc: 0.5, acc_norm: 0.625, tasks: 2, questions: 8 };
  const result: CompareResult = {
    model: "m.bin",
    ctx: 64,
    engine: "reference",
    calibration: { tokens: 128, seed: 1 },
    evaluation: { tokens: 128, seed: 2 },
    calibrateSeconds: 1,
    rows: [
      {
        method: "full",
        targetBits: null,
        bpw: null,
        quantizeSeconds: null,
        result: evalResult(10),
        zeroShot,
      },
      { method: "rtn", targetBits: 3, bpw: null, quantizeSeconds: null, error: "failed to fit" },
    ],
  };
  const text = formatCompareTable(result);
  assert.ok(text.includes("unweighted means over 2 tasks (8 questions)"));
  assert.ok(text.includes("| quantize s | acc | acc_norm |"));
  assert.ok(text.includes("| full | — | — | 10.00 | — | — | — | — | 50.0% | 62.5% |"));
  assert.ok(text.includes("| rtn | 3 | — | failed: failed to fit | — | — | — | — | — | — |"));
});

Deno.test("formatCompareTable names a given statistics file", () => {
  const result: CompareResult = {
    model: "m.bin",
    ctx: 64,
    engine: "gpu",
    calibration: { fisher: "fisher.safetensors" },
    evaluation: { tokens: 128, seed: 2 },
    calibrateSeconds: 0,
    rows: [],
  };
  assert.ok(
    formatCompareTable(result).includes("- Calibration: statistics file fisher.safetensors"),
  );
});

Deno.test("compareQuantizers evaluates each method and target", async () => {
  const workDir = await Deno.makeTempDir();
  const result = await compareQuantizers({
    model: STORIES_260K,
    methods: ["rtn", "gptq", "rsavq"],
    bits: [0.5, 3],
    calibTokens: 128,
    evalTokens: 128,
    ctx: 64,
    engine: "reference",
    gpu: null,
    workDir,
    quantize: { layers: LAYER_0, iterations: 3 },
    choiceTasks: [CHOICE_IDS],
    quiet: true,
  });
  assert.equal(result.ctx, 64);
  assert.deepEqual(result.calibration, { tokens: 128, seed: 1 });
  assert.deepEqual(result.evaluation, { tokens: 128, seed: 2 });
  assert.deepEqual(
    result.rows.map((r) => `${r.method}@${r.targetBits}`),
    ["full@null", "rtn@0.5", "gptq@0.5", "rsavq@0.5", "rtn@3", "gptq@3", "rsavq@3"],
  );

  const full = result.rows[0].result!;
  assert.equal(full.tokens, 2 * 63);
  assert.equal(result.rows[0].zeroShot!.questions, 6, "zero-shot questions of the full model");
  assert.equal(full.kld_mean, undefined, "the full model is the reference");
  for (const row of result.rows.slice(1, 4)) {
    assert.equal(row.result, undefined, `${row.method} cannot fit 0.5 bits`);
    assert.match(row.error ?? "", /--bits 0\.5 is below/, `${row.method} error message`);
  }
  for (const row of result.rows.slice(4)) {
    assert.equal(row.error, undefined, `${row.method}: ${row.error}`);
    const r = row.result!;
    assert.ok(row.bpw! <= 3, `${row.method} bpw ${row.bpw} within the target`);
    assert.ok(row.bpw! > 1, `${row.method} bpw ${row.bpw}`);
    assert.ok(row.quantizeSeconds! >= 0);
    assert.equal(r.tokens, full.tokens, "every row is scored on the same tokens");
    assert.equal(r.ref_ppl, full.ppl, "the reference is the full model on the same windows");
    assert.ok(r.kld_mean! > 0, `${row.method} KL ${r.kld_mean}`);
    assert.ok(r.kld_p99! >= r.kld_median!, `${row.method} p99 below the median`);
    assert.ok(r.top1_agreement! > 0, `${row.method} top-1 ${r.top1_agreement}`);
    assert.ok(r.top1_agreement! <= 1, `${row.method} top-1 ${r.top1_agreement}`);
    assert.equal(row.zeroShot!.tasks, 2, `${row.method} zero-shot tasks`);
    assert.ok(row.zeroShot!.acc >= 0, `${row.method} acc ${row.zeroShot!.acc}`);
    assert.ok(row.zeroShot!.acc <= 1, `${row.method} acc ${row.zeroShot!.acc}`);
  }

  // only the statistics file remains: quantized models are deleted after evaluation
  const files = [...Deno.readDirSync(workDir)].map((e) => e.name);
  assert.deepEqual(files, ["fisher.safetensors"]);
});

Deno.test("compareQuantizers rejects equal seeds", async () => {
  await assert.rejects(
    compareQuantizers({
      model: STORIES_260K,
      calibSeed: 3,
      evalSeed: 3,
      engine: "reference",
      gpu: null,
      workDir: "/nonexistent",
    }),
    (err: Error) => err instanceof UsageError && /both 3.*held out/.test(err.message),
  );
});

async function runCompareTask(args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", COMPARE_TASK, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("compare task writes the Markdown table", async () => {
  const out = `${await Deno.makeTempDir()}/compare.md`;
  // deno-fmt-ignore
  const args = [
    "--model", STORIES_260K, "--out", out, "--methods", "rtn,gptq", "--bits", "3,4",
    "--calib-tokens", "128", "--eval-tokens", "128", "--ctx", "64", "--tasks", CHOICE_IDS,
    "--engine", "reference", "--gpu", "never", "--quiet",
  ];
  const { code, stdout, stderr } = await runCompareTask(args);
  assert.equal(code, 0, stderr);
  assert.equal(stderr, "", "--quiet prints nothing on stderr");
  const table = await Deno.readTextFile(out);
  assert.equal(stdout.trimEnd(), table.trimEnd(), "stdout repeats the file");
  const rows = table.split("\n").filter((l) => /^\| (full|rtn|gptq) \|/.test(l));
  assert.equal(rows.length, 5);
  assert.match(table, /\| rtn \| 4 \| \d\.\d{3} \| (\*\*)?\d+\.\d{2}/);
  assert.match(table, /^\| full \|.*\| \d+\.\d% \| \d+\.\d% \|$/m, "zero-shot columns");
  assert.match(
    table,
    /- Command: `deno task compare --model \S+ --out \S+ --methods rtn,gptq --bits 3,4/,
  );
});

Deno.test("compare task rejects bad input in one line", async () => {
  // arguments                                                fragments of the error line
  const cases: [string[], string[]][] = [
    [["--model", STORIES_260K], ["--out"]],
    [["--model", "missing-model.bin", "--out", "x.md"], ["missing-model.bin", "not found"]],
    [["--model", STORIES_260K, "--out", "x.md", "--methods", "rtn,awq"], ["--methods", '"awq"']],
    [["--model", STORIES_260K, "--out", "x.md", "--bits", "3,x"], ["--bits", '"x"']],
    [["--model", STORIES_260K, "--out", "x.md", "--calib-seed", "5", "--eval-seed", "5"], [
      "both 5",
    ]],
    [["--model", STORIES_260K, "--out", "x.md", "--ctx", "1000"], ["--ctx 1000", "512"]],
    [["--model", STORIES_260K, "--out", "x.md", "--keep"], ["--keep", "--work-dir"]],
  ];
  for (const [args, fragments] of cases) {
    const { code, stdout, stderr } = await runCompareTask([
      ...args,
      "--engine",
      "reference",
      "--gpu",
      "never",
      "--quiet",
    ]);
    assert.equal(code, 1, args.join(" "));
    assert.equal(stdout, "");
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one line for ${args.join(" ")}: ${stderr}`);
    for (const fragment of fragments) {
      assert.ok(lines[0].includes(fragment), `"${fragment}" missing from: ${lines[0]}`);
    }
  }
});

Deno.test("compareQuantizers shares VQ codebooks across a scope", async () => {
  const run = async (codebookScope: "layer" | "model") =>
    compareQuantizers({
      workDir: await Deno.makeTempDir(),
      model: STORIES_260K,
      methods: ["rtn", "rsavq"],
      bits: [3],
      calibTokens: 128,
      evalTokens: 128,
      ctx: 64,
      engine: "reference",
      gpu: null,
      quantize: { layers: LAYER_0, iterations: 3, codebookScope },
      quiet: true,
    });
  const perLayer = await run("layer"), shared = await run("model");
  const bpw = (rows: typeof perLayer.rows, method: string) =>
    rows.find((r) => r.method === method)!.bpw!;
  assert.equal(bpw(shared.rows, "rtn"), bpw(perLayer.rows, "rtn"), "rtn has no codebook to share");
  assert.notEqual(
    bpw(shared.rows, "rsavq"),
    bpw(perLayer.rows, "rsavq"),
    "one shared codebook changes the budget",
  );
  assert.ok(
    bpw(shared.rows, "rsavq") <= 3,
    `shared-codebook bpw ${bpw(shared.rows, "rsavq")} within the target`,
  );
});
