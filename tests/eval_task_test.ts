import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { evaluate } from "../src/eval/evaluate.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { sampleTokenStream } from "../src/data/sample_stream.ts";
import { quantizeModel } from "../src/quantize/quantize_model.ts";
import { readChoiceTasks } from "../src/data/choice_tasks.ts";
import { evaluateChoiceTasks } from "../src/eval/zero_shot.ts";
import { STORIES_260K } from "./_helpers.ts";

const EVAL_TASK = fileURLToPath(new URL("../tasks/eval.ts", import.meta.url));
const CHOICE_IDS = fileURLToPath(new URL("./fixtures/choice_ids.jsonl", import.meta.url));

function assertClose(actual: number, expected: number, tolerance: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `${what}: expected ${expected}, got ${actual}`,
  );
}

/** Runs `deno task eval` in a subprocess and returns its exit code, stdout and stderr. */
async function runEvalTask(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", EVAL_TASK, ...args],
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

Deno.test("eval task prints the perplexity of a sampled stream", async () => {
  // deno-fmt-ignore
  const { code, stdout, stderr } = await runEvalTask([
    "--model", STORIES_260K, "--sample-tokens", "1024", "--seed", "1", "--json", "--engine",
    "reference", "--quiet",
  ]);
  assert.equal(code, 0, stderr);
  assert.equal(stderr, "", "--quiet prints no progress");
  const report = JSON.parse(stdout);

  // the same stream and evaluation through the library
  const model = await loadLlama2c(STORIES_260K);
  const lm = await ReferenceModel.create(model.config, model.weights);
  model.weights.close();
  const tokens = await sampleTokenStream(lm, { tokens: 1024, windowLength: 512, seed: 1 });
  const expected = await evaluate(lm, tokens, { ctx: 512 });
  assert.equal(report.ppl, expected.ppl);
  assert.equal(report.nll, expected.nll);
  assert.equal(report.tokens, 2 * 511);
  assert.equal(report.windows, 2);
  assert.equal(report.ctx, 512);
  assert.equal(report.kld_mean, undefined);
});

Deno.test("eval task reports zero KL against itself", async () => {
  // deno-fmt-ignore
  const { code, stdout, stderr } = await runEvalTask([
    "--model", STORIES_260K, "--ref", STORIES_260K, "--sample-tokens", "512", "--ctx", "256",
    "--seed", "1", "--json", "--engine", "reference",
  ]);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /eval: 512\/512/, "progress on stderr");
  const report = JSON.parse(stdout);
  assert.ok(Math.abs(report.kld_mean) <= 1e-6, `kld_mean ${report.kld_mean}`);
  assert.ok(Math.abs(report.kld_p99) <= 1e-6, `kld_p99 ${report.kld_p99}`);
  assert.equal(report.top1_agreement, 1);
  assert.equal(report.ref, STORIES_260K);
});

Deno.test("eval task evaluates a token file on the gpu", async () => {
  const model = await loadLlama2c(STORIES_260K);
  const lm = await ReferenceModel.create(model.config, model.weights);
  model.weights.close();
  const tokens = await sampleTokenStream(lm, { tokens: 256, windowLength: 128, seed: 4 });
  const expected = await evaluate(lm, tokens, { ctx: 128 });
  const path = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(path, JSON.stringify([...tokens]));

  // deno-fmt-ignore
  const { code, stdout, stderr } = await runEvalTask([
    "--model", STORIES_260K, "--ref", STORIES_260K, "--data", path, "--ctx", "128", "--json",
    "--quiet",
  ]);
  assert.equal(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.equal(report.engine, "gpu");
  assert.equal(report.tokens, 2 * 127);
  assertClose(report.ppl, expected.ppl, 1e-5 * expected.ppl, "ppl");
  assert.ok(report.kld_mean <= 1e-6, `kld_mean ${report.kld_mean}`);
  assert.deepEqual(report.data, [path]);
});

Deno.test("eval task reports the bpw of a quantized model", async () => {
  const model = await loadLlama2c(STORIES_260K);
  const out = `${await Deno.makeTempDir()}/rtn.safetensors`;
  const quantized = await quantizeModel(model, null, { method: "rtn", bits: 4, out, quiet: true });
  model.weights.close();

  // deno-fmt-ignore
  const { code, stdout, stderr } = await runEvalTask([
    "--model", out, "--ref", STORIES_260K, "--sample-tokens", "128", "--ctx", "64", "--engine",
    "reference", "--json", "--quiet",
  ]);
  assert.equal(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.equal(report.method, "rtn");
  assert.equal(report.target_bpw, 4);
  assert.equal(report.bpw, quantized.bpw);
  assert.ok(report.kld_mean > 0, `kld_mean ${report.kld_mean}`);
});

Deno.test("eval task prints a summary without --json", async () => {
  // deno-fmt-ignore
  const { code, stdout, stderr } = await runEvalTask([
    "--model", STORIES_260K, "--sample-tokens", "64", "--ctx", "32", "--engine", "reference",
    "--quiet",
  ]);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^ppl +\d+\.\d{4} ± /m);
  assert.match(stdout, /2 windows of up to 32 tokens/);
});

Deno.test("eval task rejects bad input in one line", async () => {
  const outOfVocab = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(outOfVocab, "[1, 2, 600]");
  const empty = await Deno.makeTempFile({ suffix: ".u32" });
  // arguments                                                       fragments of the error line
  // deno-fmt-ignore
  const cases: [string[], string[]][] = [
    [["--model", STORIES_260K, "--sample-tokens", "64", "--ctx", "600"], ["--ctx 600", STORIES_260K, "512"]],
    [["--model", STORIES_260K, "--sample-tokens", "64", "--ctx", "1"], ["--ctx 1", "at least 2"]],
    [["--model", STORIES_260K, "--data", outOfVocab], [outOfVocab, "[2]", "600"]],
    [["--model", STORIES_260K, "--data", empty], [empty, "empty"]],
    [["--model", STORIES_260K], ["--data", "--sample-tokens", "--tasks"]],
    [["--model", STORIES_260K, "--sample-tokens", "64", "--tasks", CHOICE_IDS], ["exactly one of"]],
    [["--model", STORIES_260K, "--tasks", CHOICE_IDS, "--length-unit", "words"], ["--length-unit", '"words"']],
    [["--model", STORIES_260K, "--sample-tokens", "x"], ["--sample-tokens", '"x"']],
    [["--model", STORIES_260K, "--sample-tokens", "64", "--engine", "cuda"], ["--engine", "gpu, reference"]],
    [["--model", "missing-model.bin", "--sample-tokens", "64"], ["missing-model.bin", "not found"]],
  ];
  for (const [args, fragments] of cases) {
    const withEngine = args.includes("--engine") ? args : [...args, "--engine", "reference"];
    const { code, stdout, stderr } = await runEvalTask(withEngine);
    assert.equal(code, 1, args.join(" "));
    assert.equal(stdout, "");
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one line for ${args.join(" ")}: ${stderr}`);
    for (const fragment of fragments) {
      assert.ok(lines[0].includes(fragment), `"${fragment}" missing from: ${lines[0]}`);
    }
  }
});

Deno.test("eval task scores zero-shot tasks", async () => {
  // deno-fmt-ignore
  const { code, stdout, stderr } = await runEvalTask([
    "--model", STORIES_260K, "--tasks", CHOICE_IDS, "--engine", "reference", "--json", "--quiet",
  ]);
  assert.equal(code, 0, stderr);
  const report = JSON.parse(stdout);

  // the same questions scored through the library
  const model = await loadLlama2c(STORIES_260K);
  const lm = await ReferenceModel.create(model.config, model.weights);
  model.weights.close();
  const { questions } = await readChoiceTasks([CHOICE_IDS]);
  const expected = await evaluateChoiceTasks(lm, null, questions);
  assert.deepEqual(report.tasks, expected.tasks);
  assert.deepEqual(report.average, expected.average);
  assert.equal(report.skipped_lines, 0);
  assert.equal(report.samples, undefined, "samples only with --samples");
  assert.equal(report.comparison, undefined);
});

Deno.test("eval task compares zero-shot scores with a reference", async () => {
  // deno-fmt-ignore
  const { code, stdout, stderr } = await runEvalTask([
    "--model", STORIES_260K, "--ref", STORIES_260K, "--tasks", CHOICE_IDS, "--engine", "reference",
    "--json", "--samples", "--quiet",
  ]);
  assert.equal(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.equal(report.comparison.average.acc_diff, 0);
  assert.equal(report.comparison.average.acc_norm_diff, 0);
  assert.deepEqual(report.ref_scores.average, report.average);
  assert.equal(report.samples.length, report.average.questions);
});

Deno.test("eval task prints a zero-shot table", async () => {
  // deno-fmt-ignore
  const { code, stdout, stderr } = await runEvalTask([
    "--model", STORIES_260K, "--tasks", CHOICE_IDS, "--engine", "reference", "--quiet",
  ]);
  assert.equal(code, 0, stderr);
  const lines = stdout.trimEnd().split("\n");
  assert.match(lines[1], /^task +n +acc % +acc_norm %$/);
  assert.match(lines.at(-1)!, /^average of 2 +6 +\d+\.\d\d ± \d+\.\d\d/);
});

Deno.test("eval task skips malformed task lines on request", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(
    path,
    [
      '{"context": [1, 5], "choices": [[7], [9]], "answer": 1}',
      '{"context": [1], "choices": [[7]], "answer": 0}',
      "not json",
      '{"context": [1, 6], "choices": [[2], [3], [4]], "answer": 2}',
    ].join("\n"),
  );
  // deno-fmt-ignore
  const stopped = await runEvalTask([
    "--model", STORIES_260K, "--tasks", path, "--engine", "reference", "--quiet",
  ]);
  assert.equal(stopped.code, 1);
  assert.equal(stopped.stdout, "");
  assert.equal(stopped.stderr.trim().split("\n").length, 1, stopped.stderr);
  assert.ok(stopped.stderr.includes(`${path}:2`), stopped.stderr);

  // deno-fmt-ignore
  const skipped = await runEvalTask([
    "--model", STORIES_260K, "--tasks", path, "--skip-invalid", "--engine", "reference", "--json",
    "--quiet",
  ]);
  assert.equal(skipped.code, 0, skipped.stderr);
  const warnings = skipped.stderr.trim().split("\n");
  assert.equal(warnings.length, 2, skipped.stderr);
  assert.ok(warnings[0].startsWith(`skipped: ${path}:2`), warnings[0]);
  assert.ok(warnings[1].startsWith(`skipped: ${path}:3`), warnings[1]);
  const report = JSON.parse(skipped.stdout);
  assert.equal(report.skipped_lines, 2);
  assert.equal(report.average.questions, 2);
});

Deno.test("eval task scores a seeded sample of held-out corpus text", async () => {
  const args = ["--data", "corpus", "--eval-tokens", "300", "--json", "--quiet"];
  const first = await runEvalTask([...args, "--engine", "reference"]);
  assert.equal(first.code, 0, first.stderr);
  const report = JSON.parse(first.stdout);
  // 300 tokens in windows of the reference model's 128: 127 + 127 + 43 scored
  assert.equal(report.tokens, 297);
  assert.ok(report.ppl > 1);
  assert.deepEqual(report.data, ["corpus"]);
  const again = JSON.parse((await runEvalTask([...args, "--engine", "reference"])).stdout);
  assert.equal(again.ppl, report.ppl);
  const otherSeed = JSON.parse(
    (await runEvalTask([...args, "--engine", "reference", "--seed", "2"])).stdout,
  );
  assert.notEqual(otherSeed.ppl, report.ppl);
});

Deno.test("eval task rejects --eval-tokens without --data", async () => {
  const { code, stderr } = await runEvalTask(["--sample-tokens", "64", "--eval-tokens", "10"]);
  assert.equal(code, 1);
  assert.match(stderr, /--eval-tokens caps --data/);
});
