import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readPlan } from "../src/allocate/plan_io.ts";
import type { LinearStats } from "../src/calibrate/accumulator.ts";
import { writeFisherStats } from "../src/calibrate/fisher_file.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import { Rng } from "../src/util/rng.ts";
import { STORIES_260K } from "./_helpers.ts";

const TASK = fileURLToPath(new URL("../tasks/allocate.ts", import.meta.url));

/** Writes seeded random statistics for every block linear layer of stories260K. */
async function writeStoriesStats(path: string): Promise<number> {
  const model = await loadLlama2c(STORIES_260K);
  const rng = new Rng(41);
  const stats = new Map<string, LinearStats>();
  for (const name of model.weights.names()) {
    const match = /^(model\.layers\.\d+\.\w+\.\w+_proj)\.weight$/.exec(name);
    if (!match) continue;
    const [m, n] = model.weights.shape(name);
    const positive = (count: number) =>
      Float32Array.from({ length: count }, () => Math.exp(rng.normal()));
    const a = new Float32Array(n * n); // [n, n], diagonal only
    for (let i = 0; i < n; i++) a[i * n + i] = 0.5 + rng.next();
    stats.set(match[1], {
      A: a,
      G_diag: positive(m),
      grad_mean: new Float32Array(m * n),
      fisher_diag: positive(m * n),
    });
  }
  model.weights.close();
  await writeFisherStats(path, stats, {
    model: STORIES_260K,
    data: "synthetic",
    seqLen: 8,
    sequences: 4,
    tokens: 32,
    seed: 41,
    fullG: false,
    meanLoss: 0,
  });
  return stats.size;
}

async function runTask(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TASK, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("allocate task writes a plan within budget", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fisher = join(dir, "fisher.safetensors");
    const layers = await writeStoriesStats(fisher);
    const out = join(dir, "plan.json");
    const result = await runTask([
      "--model",
      STORIES_260K,
      "--fisher",
      fisher,
      "--bits",
      "3",
      "--scope",
      "model",
      "--explain",
      "--quiet",
      "--out",
      out,
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, "");
    const plan = await readPlan(out);
    assert.equal(Object.keys(plan.layers).length, layers);
    assert.ok(plan.bpw <= 3, `bpw ${plan.bpw}`);
    assert.equal(plan.scope, "model");
    // The table prints a title, a header and a rule, then one row per layer.
    assert.equal(result.stdout.trim().split("\n").length, 3 + layers);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("allocate task shares codebooks with --codebook-scope", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fisher = join(dir, "fisher.safetensors");
    await writeStoriesStats(fisher);
    const out = join(dir, "plan.json");
    const args = [
      "--model",
      STORIES_260K,
      "--fisher",
      fisher,
      "--bits",
      "2",
      "--scope",
      "model",
      "--groups",
      "2",
    ];
    const result = await runTask([...args, "--codebook-scope", "type", "--quiet", "--out", out]);
    assert.equal(result.code, 0, result.stderr);
    const plan = await readPlan(out);
    assert.equal(plan.codebookScope, "type");
    assert.ok(plan.bpw <= 2, `bpw ${plan.bpw}`);
    const sizes = (block: number) =>
      plan.layers[`model.layers.${block}.mlp.down_proj`].groups.map((g) => g.codebookSize);
    assert.deepEqual(sizes(1), sizes(0));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("allocate task fails in one line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fisher = join(dir, "fisher.safetensors");
    await writeStoriesStats(fisher);
    const out = join(dir, "plan.json");
    // arguments                                                                   message
    const cases: [string[], RegExp][] = [
      [
        ["--model", STORIES_260K, "--fisher", fisher, "--bits", "0.5", "--out", out],
        /cannot be met: .* at least [\d.]+ bits per weight/,
      ],
      [["--model", STORIES_260K, "--bits", "2", "--out", out], /Missing --fisher/],
      [[
        "--model",
        STORIES_260K,
        "--fisher",
        fisher,
        "--bits",
        "2",
        "--scope",
        "block",
        "--out",
        out,
      ], /Invalid --scope "block"/],
      [
        [
          "--model",
          STORIES_260K,
          "--fisher",
          fisher,
          "--bits",
          "2",
          "--codebook-scope",
          "block",
          "--out",
          out,
        ],
        /--scope layer cannot hold .* --scope model/,
      ],
      [
        [
          "--model",
          STORIES_260K,
          "--fisher",
          fisher,
          "--bits",
          "2",
          "--codebook-scope",
          "row",
          "--out",
          out,
        ],
        /Invalid --codebook-scope "row": expected one of layer, block, type, model/,
      ],
      [[
        "--model",
        STORIES_260K,
        "--fisher",
        join(dir, "none.safetensors"),
        "--bits",
        "2",
        "--out",
        out,
      ], /none\.safetensors: Statistics file not found/],
    ];
    for (const [args, message] of cases) {
      const result = await runTask([...args, "--quiet"]);
      assert.equal(result.code, 1, args.join(" "));
      const lines = result.stderr.trim().split("\n");
      assert.equal(lines.length, 1, result.stderr);
      assert.match(lines[0], /^error: /);
      assert.match(lines[0], message);
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["fisher.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantize task follows a plan's budget and scope", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fisher = join(dir, "fisher.safetensors");
    await writeStoriesStats(fisher);
    const plan = join(dir, "plan.json");
    const allocated = await runTask([
      "--model",
      STORIES_260K,
      "--fisher",
      fisher,
      "--bits",
      "3",
      "--scope",
      "model",
      "--groups",
      "1",
      "--codebook-scope",
      "block",
      "--quiet",
      "--out",
      plan,
    ]);
    assert.equal(allocated.code, 0, allocated.stderr);
    const quantize = (extra: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          fileURLToPath(new URL("../tasks/quantize.ts", import.meta.url)),
          "--model",
          STORIES_260K,
          "--fisher",
          fisher,
          "--method",
          "rsavq",
          "--plan",
          plan,
          "--iterations",
          "2",
          "--out",
          join(dir, "q.safetensors"),
          ...extra,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();

    // no --bits: the plan's budget and scope are used, and the file spends what the plan states
    const ok = await quantize([]);
    const stderr = new TextDecoder().decode(ok.stderr);
    assert.equal(ok.code, 0, stderr);
    const expected = (await readPlan(plan)).bpw.toFixed(4);
    assert.match(stderr, new RegExp(`rsavq: ${expected} bpw \\(target 3\\)`));
    assert.match(stderr, /block scope/);

    for (
      const [extra, message] of [
        [["--bits", "2"], /differs from the budget 3/],
        [["--codebook-scope", "model"], /differs from the plan's codebook scope block/],
        [["--vector-length", "2"], /--plan fixes the vector length/],
      ] as const
    ) {
      const rejected = await quantize([...extra]);
      assert.equal(rejected.code, 1, extra.join(" "));
      assert.match(new TextDecoder().decode(rejected.stderr), message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
