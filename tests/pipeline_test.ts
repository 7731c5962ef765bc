import assert from "node:assert/strict";
import { join } from "node:path";
import { UsageError } from "../src/errors.ts";
import { FileHasher, sha256File } from "../src/pipeline/file_hash.ts";
import { type Manifest, readManifest, type StepRecord } from "../src/pipeline/manifest.ts";
import { type PipelineOptions, resolvePipelineOptions } from "../src/pipeline/options.ts";
import { runPipeline } from "../src/pipeline/run_pipeline.ts";
import { StepRunner, type StepSpec } from "../src/pipeline/step_runner.ts";
import { checkDisjointWindows } from "../src/pipeline/token_streams.ts";
import { REFERENCE_MODEL, STORIES_260K } from "./_helpers.ts";
import { loadNpmCorpus, splitHeldOut } from "../src/data/corpus.ts";

/** sha256 of stories260K.bin as published with it. */
const STORIES_SHA256 = "9414d5a285453a7eab631713d171753232c978f6f97654211469aff8be93c8d6";

// ---------------------------------------------------------------------------------------
// Step caching on toy steps (no model)

/** Builds a step that writes `text` to `name`.txt and counts its runs. */
function textStep(
  dir: string,
  name: string,
  text: () => string,
  after: string[],
  inputs: Record<string, string>,
  counts: Map<string, number>,
): StepSpec {
  return {
    name,
    inputs,
    settings: { name },
    after,
    outputs: [`${name}.txt`],
    run: async () => {
      counts.set(name, (counts.get(name) ?? 0) + 1);
      await Deno.writeTextFile(join(dir, `${name}.txt`), text());
      return { length: text().length };
    },
  };
}

Deno.test("StepRunner reuses unchanged steps and redoes downstream of a change", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const source = join(dir, "source.txt");
    await Deno.writeTextFile(source, "v1");
    const counts = new Map<string, number>();
    let bText = "b";
    const chain = async (previous: Record<string, StepRecord>) => {
      const runner = new StepRunner(dir, previous, new FileHasher(), "test", () => {});
      await runner.run(
        textStep(dir, "a", () => "a:" + Deno.readTextFileSync(source), [], { source }, counts),
      );
      await runner.run(textStep(dir, "b", () => bText, [], {}, counts));
      await runner.run(textStep(dir, "c", () => "c", ["a"], { a: join(dir, "a.txt") }, counts));
      await runner.run(textStep(dir, "d", () => "d", ["b"], { b: join(dir, "b.txt") }, counts));
      return runner;
    };

    const first = await chain({});
    assert.deepEqual(first.ran, ["a", "b", "c", "d"]);

    const second = await chain(first.records);
    assert.deepEqual(second.ran, []);
    assert.deepEqual(second.reused, ["a", "b", "c", "d"]);

    // a changed input reruns its step and the step downstream, nothing else
    await Deno.writeTextFile(source, "v2");
    const third = await chain(second.records);
    assert.deepEqual(third.ran, ["a", "c"]);

    // a deleted output reruns that step; its output is byte-identical, yet what follows reruns too
    await Deno.remove(join(dir, "b.txt"));
    const fourth = await chain(third.records);
    assert.deepEqual(fourth.ran, ["b", "d"]);
    assert.equal(counts.get("d"), 2);

    // an output edited by hand is detected by its digest
    bText = "b";
    await Deno.writeTextFile(join(dir, "d.txt"), "edited");
    const fifth = await chain(fourth.records);
    assert.deepEqual(fifth.ran, ["d"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StepRunner rejects a step whose upstream has not run", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const runner = new StepRunner(dir, {}, new FileHasher(), "test", () => {});
    await assert.rejects(
      () => runner.run(textStep(dir, "c", () => "c", ["a"], {}, new Map())),
      /runs after a, which has not run yet/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FileHasher trusts a fingerprint only while size and mtime match", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "f.bin");
    await Deno.writeFile(path, new Uint8Array([1, 2, 3]));
    const first = await new FileHasher().hash(path);
    assert.equal(first.sha256, await sha256File(path));
    assert.equal(first.bytes, 3);

    const reuse = new FileHasher([{ ...first, sha256: "recorded" }]);
    assert.equal((await reuse.hash(path)).sha256, "recorded");
    assert.equal(reuse.hashedFiles, 0);

    await Deno.writeFile(path, new Uint8Array([1, 2, 3, 4]));
    const changed = new FileHasher([{ ...first, sha256: "recorded" }]);
    assert.equal((await changed.hash(path)).sha256, await sha256File(path));
    assert.equal(changed.hashedFiles, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FileHasher digest of a folder changes with any file in it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "m", "sub"), { recursive: true });
    await Deno.writeTextFile(join(dir, "m", "config.json"), "{}");
    await Deno.writeTextFile(join(dir, "m", "sub", "w.bin"), "abc");
    const before = await new FileHasher().hash(join(dir, "m"));
    assert.equal(before.bytes, 5);
    await Deno.writeTextFile(join(dir, "m", "sub", "w.bin"), "abd");
    const after = await new FileHasher().hash(join(dir, "m"));
    assert.notEqual(after.sha256, before.sha256);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------
// Options and data checks

Deno.test("resolvePipelineOptions rejects bad options by name", () => {
  const base: PipelineOptions = { model: "m.bin", out: "out", bits: [2] };
  // change                                                                  message
  const cases: [Partial<PipelineOptions>, RegExp][] = [
    [{ bits: [] }, /Missing bits/],
    [{ bits: [0] }, /Invalid --bits value 0/],
    [{ bits: [2, 2] }, /repeated/],
    [{ method: "awq" as never }, /Invalid --method "awq"/],
    [{ compare: ["rsavq"] }, /already the main --method/],
    [{ compare: ["rtn", "rtn"] }, /repeats a method/],
    [{ calibData: ["a.txt"], evalData: ["a.txt"] }, /both calibration and evaluation data/],
    [{ calibTokens: 1 }, /Invalid --calib-tokens 1/],
    [{ seqLen: 1.5 }, /Invalid --seq-len 1.5/],
    [{ seed: -1 }, /Invalid --seed -1/],
    [{ engine: "cuda" as never }, /Invalid --engine cuda/],
    [{ scope: "block" as never }, /Invalid --scope block/],
    [{ codebookScope: "row" as never }, /Invalid --codebook-scope row/],
    [{ codebookScope: "block", scope: "layer" }, /--scope layer cannot hold .* --scope model/],
    [{ distortion: "exact" as never }, /Invalid --distortion exact/],
    [{ distortion: "measured", groups: 2 }, /needs one group per layer: drop --groups 2/],
  ];
  for (const [change, message] of cases) {
    assert.throws(
      () => resolvePipelineOptions({ ...base, ...change }),
      (err: Error) => err instanceof UsageError && message.test(err.message),
      JSON.stringify(change),
    );
  }
});

Deno.test("resolvePipelineOptions samples by default and caps files only when asked", () => {
  const sampled = resolvePipelineOptions({ model: "m.bin", out: "o", bits: [3, 2] });
  assert.deepEqual(sampled.bits, [2, 3]);
  assert.equal(sampled.calibTokens, 8192);
  assert.equal(sampled.evalTokens, 8192);
  assert.equal(sampled.codebookScope, "block");
  const perLayer = resolvePipelineOptions({ model: "m.bin", out: "o", bits: [2], scope: "layer" });
  assert.equal(perLayer.codebookScope, "layer");
  const files = resolvePipelineOptions({
    model: "m.bin",
    out: "o",
    bits: [2],
    calibData: ["c.json"],
    evalData: ["e.json"],
  });
  assert.equal(files.calibTokens, null);
  assert.equal(files.evalTokens, null);
});

Deno.test("checkDisjointWindows rejects a shared window", () => {
  const a = [new Int32Array([1, 5, 6]), new Int32Array([1, 7, 8])];
  checkDisjointWindows(a, [new Int32Array([1, 5, 7])]);
  assert.throws(
    () => checkDisjointWindows(a, [new Int32Array([1, 2, 3]), new Int32Array([1, 7, 8])]),
    /Evaluation window 1 also occurs/,
  );
});

// ---------------------------------------------------------------------------------------
// End to end on stories260K, reduced: reference engine, 4 calibration and 2 evaluation
// windows of 64 tokens

Deno.test({
  name: "runPipeline on stories260K runs, then reuses every step",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "pipeline-" });
    try {
      const options: PipelineOptions = {
        model: STORIES_260K,
        out: dir,
        bits: [2],
        compare: ["rtn", "gptq", "vptq"],
        calibTokens: 256,
        evalTokens: 128,
        seqLen: 64,
        engine: "reference",
        quiet: true,
      };
      const lines: string[] = [];
      const first = await runPipeline(options, { log: (l) => lines.push(l) });
      const steps = [
        "sample-calibration",
        "sample-evaluation",
        "calibrate",
        "eval-original",
        "allocate-2",
        ...["rsavq", "rtn", "gptq", "vptq"].flatMap((m) => [`quantize-${m}-2`, `eval-${m}-2`]),
      ];
      assert.deepEqual(first.ran, steps);
      assert.deepEqual(first.reused, []);

      // manifest: inputs with digests, versions, every step's outputs as they are on disk
      const read = await readManifest(dir);
      assert.ok(read, "manifest.json missing");
      const manifest: Manifest = read;
      assert.equal(manifest.inputs.model.sha256, STORIES_SHA256);
      assert.equal(manifest.tool.deno, Deno.version.deno);
      assert.match(manifest.tool.version, /^\d+\.\d+\.\d+/);
      assert.equal(manifest.settings.seqLen, 64);
      for (const name of steps) {
        const record: StepRecord | undefined = manifest.steps[name];
        assert.ok(record, `step ${name} missing from the manifest`);
        for (const [file, f] of Object.entries(record.outputs)) {
          assert.equal(f.sha256, await sha256File(join(dir, file)), `${name}: ${file}`);
        }
      }
      assert.equal(
        manifest.steps["calibrate"].inputs["data0"].path,
        join(dir, "calib_tokens.json"),
      );

      // calibration and evaluation windows come from different seeds and differ
      const calib: number[][] = JSON.parse(await Deno.readTextFile(join(dir, "calib_tokens.json")));
      const evalWindows: number[][] = JSON.parse(
        await Deno.readTextFile(join(dir, "eval_tokens.json")),
      );
      assert.equal(calib.length, 4);
      assert.equal(evalWindows.length, 2);
      for (const w of [...calib, ...evalWindows]) {
        assert.equal(w[0], 1, "every window starts with BOS");
      }
      assert.notDeepEqual(calib[0], evalWindows[0]);

      // results: the original first, then each method at 2 bits within budget
      const rows = manifest.results;
      assert.deepEqual(rows.map((r) => r.method), ["original", "rsavq", "rtn", "gptq", "vptq"]);
      // rsavq's time includes the allocation of the plan it follows
      const quantizeResult = manifest.steps["quantize-rsavq-2"].result as { seconds: number };
      const rsavqSeconds = manifest.steps["allocate-2"].seconds + quantizeResult.seconds;
      assert.ok(Math.abs(rows[1].quantizeSeconds! - rsavqSeconds) < 1e-9);
      assert.equal(rows[0].kldMean, 0);
      assert.ok(rows[0].ppl > 1, `original perplexity ${rows[0].ppl}`);
      assert.ok(
        rows[0].ppl < 512,
        `original perplexity ${rows[0].ppl} is no better than uniform over 512 tokens`,
      );
      for (const r of rows.slice(1)) {
        assert.ok(r.bpw! > 0, `${r.method} bpw ${r.bpw}`);
        assert.ok(r.bpw! <= 2 + 1e-9, `${r.method} bpw ${r.bpw} exceeds the budget`);
        assert.ok(r.kldMean > 0, `${r.method} KL divergence ${r.kldMean}`);
        assert.ok(r.top1 > 0, `${r.method} top-1 ${r.top1}`);
        assert.ok(
          r.top1 < 1,
          `${r.method} top-1 ${r.top1}: a 2-bit model should disagree somewhere`,
        );
        assert.equal(r.fileBytes, (await Deno.stat(join(dir, r.file))).size);
      }
      for (
        const column of [
          "method",
          "bpw",
          "perplexity",
          "KL div",
          "top-1",
          "file size",
          "quantize time",
        ]
      ) assert.match(first.table, new RegExp(column));
      assert.match(await Deno.readTextFile(first.report), /<svg id="rate-distortion"/);

      // second run: every step reused, nothing recomputed, the same table
      lines.length = 0;
      const second = await runPipeline(options, { log: (l) => lines.push(l) });
      assert.deepEqual(second.ran, []);
      assert.deepEqual(second.reused, steps);
      assert.equal(second.table, first.table);
      assert.ok(lines.every((l) => l.includes("reused")), lines.join("\n"));

      // more evaluation tokens: only the evaluation stream and the evaluations rerun
      const third = await runPipeline({ ...options, evalTokens: 192 }, { log: () => {} });
      assert.deepEqual(third.ran, [
        "sample-evaluation",
        "eval-original",
        ...["rsavq", "rtn", "gptq", "vptq"].map((m) => `eval-${m}-2`),
      ]);

      // a deleted quantized file: that method is quantized and evaluated again
      await Deno.remove(join(dir, "gptq-2.safetensors"));
      const fourth = await runPipeline({ ...options, evalTokens: 192 }, { log: () => {} });
      assert.deepEqual(fourth.ran, ["quantize-gptq-2", "eval-gptq-2"]);

      // the high-rate model instead of measured distortion: only the plan and the method
      // that follows it rerun
      const measured = JSON.parse(await Deno.readTextFile(join(dir, "plan-2.json")));
      assert.equal(measured.distortion, "measured");
      const fifth = await runPipeline({ ...options, evalTokens: 192, distortion: "model" }, {
        log: () => {},
      });
      assert.deepEqual(fifth.ran, ["allocate-2", "quantize-rsavq-2", "eval-rsavq-2"]);
      const modelled = JSON.parse(await Deno.readTextFile(join(dir, "plan-2.json")));
      assert.equal(modelled.distortion, "model");
      assert.ok(modelled.bpw <= 2);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "runPipeline scores task files zero-shot",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "pipeline-" });
    try {
      const tasks = new URL("./fixtures/choice_ids.jsonl", import.meta.url).pathname;
      const result = await runPipeline(
        {
          model: STORIES_260K,
          out: dir,
          bits: [3],
          method: "rtn",
          evalTokens: 128,
          seqLen: 64,
          engine: "reference",
          choiceTasks: [tasks],
          quiet: true,
        },
        { log: () => {} },
      );
      // rtn needs no statistics, so nothing is calibrated
      assert.deepEqual(result.ran, [
        "sample-evaluation",
        "eval-original",
        "zeroshot-original",
        "quantize-rtn-3",
        "eval-rtn-3",
        "zeroshot-rtn-3",
      ]);
      for (const row of result.manifest.results) {
        assert.ok(row.zeroShotAcc !== undefined, `${row.method} has no zero-shot accuracy`);
        assert.ok(
          row.zeroShotAcc >= 0 && row.zeroShotAcc <= 1,
          `${row.method} accuracy ${row.zeroShotAcc}`,
        );
      }
      const scores = JSON.parse(await Deno.readTextFile(join(dir, "zeroshot-original.json")));
      assert.equal(scores.average.questions, 6);
      assert.match(result.table, /0-shot acc/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "runPipeline reads and caps data files",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "pipeline-" });
    try {
      // two documents per file of 64 ids each, every one starting with BOS (id 1)
      const documents = (offset: number) =>
        [0, 1].map((
          d,
        ) => [1, ...Array.from({ length: 63 }, (_, i) => (offset + 7 * d + 13 * i) % 512)]);
      const calib = join(dir, "calib.json");
      const evalFile = join(dir, "eval.json");
      await Deno.writeTextFile(calib, JSON.stringify(documents(3)));
      await Deno.writeTextFile(evalFile, JSON.stringify(documents(5)));
      const options: PipelineOptions = {
        model: STORIES_260K,
        out: join(dir, "out"),
        bits: [3],
        method: "rtn",
        compare: ["gptq"],
        calibData: [calib],
        evalData: [evalFile],
        evalTokens: 100,
        seqLen: 64,
        engine: "reference",
        quiet: true,
      };
      const result = await runPipeline(options, { log: () => {} });
      assert.deepEqual(result.ran, [
        "calibrate",
        "eval-original",
        "quantize-rtn-3",
        "eval-rtn-3",
        "quantize-gptq-3",
        "eval-gptq-3",
      ]);
      const calibrated = result.manifest.steps["calibrate"];
      assert.equal(calibrated.inputs["data0"].path, calib);
      assert.equal((calibrated.result as { sequences: number }).sequences, 2);
      // 100 tokens kept: one window of 64 and one of 36, scoring 63 + 35 tokens
      assert.equal(
        (result.manifest.steps["eval-original"].result as { tokens: number }).tokens,
        98,
      );

      // an evaluation file with the same contents as a calibration file is rejected
      const copy = join(dir, "copy.json");
      await Deno.copyFile(calib, copy);
      await assert.rejects(
        () => runPipeline({ ...options, evalData: [copy] }, { log: () => {} }),
        /same contents as a calibration file/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("pipeline task prints a one-line error for a bad option", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "tasks/pipeline.ts",
      "--model",
      STORIES_260K,
      "--bits",
      "2,x",
      "--out",
      "unused",
    ],
    cwd: new URL("..", import.meta.url),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  assert.equal(out.code, 1);
  assert.equal(stderr.split("\n").length, 1, stderr);
  assert.match(stderr, /^error: Invalid --bits "2,x"/);
});

Deno.test({
  name: "runPipeline shares codebooks by --codebook-scope and keys steps by it",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "pipeline-scope-" });
    try {
      const options: PipelineOptions = {
        model: STORIES_260K,
        out: dir,
        bits: [2],
        compare: ["rtn", "vptq"],
        calibTokens: 256,
        evalTokens: 128,
        seqLen: 64,
        engine: "reference",
        codebookScope: "model",
        quiet: true,
      };
      await runPipeline(options, { log: () => {} });
      const manifest = (await readManifest(dir))!;
      assert.equal(manifest.steps["allocate-2"].settings.codebookScope, "model");
      assert.equal(manifest.steps["quantize-vptq-2"].settings.codebookScope, "model");
      assert.equal(manifest.steps["quantize-rtn-2"].settings.codebookScope, "layer");
      const plan = JSON.parse(await Deno.readTextFile(join(dir, "plan-2.json")));
      assert.equal(plan.codebookScope, "model");
      const rows = manifest.results;
      const rsavq = rows.find((r) => r.method === "rsavq")!;
      assert.equal(rsavq.bpw, plan.bpw, "the quantized file spends what the plan counted");
      for (const r of rows.slice(1)) assert.ok(r.bpw! <= 2 + 1e-9, `${r.method} bpw ${r.bpw}`);
      for (const method of ["rsavq", "vptq"]) {
        const header = await readSafetensorsHeader(join(dir, `${method}-2.safetensors`));
        assert.ok(
          Object.keys(header).some((n) => n.startsWith("codebooks.model.")),
          `${method} stores no shared codebook`,
        );
      }

      // Another scope changes the plan and the vector-quantized steps, not rtn.
      const again = await runPipeline({ ...options, codebookScope: "block" }, { log: () => {} });
      assert.ok(again.ran.includes("allocate-2"), again.ran.join());
      assert.ok(again.ran.includes("quantize-vptq-2"), again.ran.join());
      assert.ok(again.reused.includes("quantize-rtn-2"), again.reused.join());
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Tensor names of a safetensors file, from its JSON header. */
async function readSafetensorsHeader(path: string): Promise<Record<string, unknown>> {
  const file = await Deno.open(path);
  try {
    const size = new Uint8Array(8);
    await file.read(size);
    const length = Number(new DataView(size.buffer).getBigUint64(0, true));
    const header = new Uint8Array(length);
    let read = 0;
    while (read < length) read += (await file.read(header.subarray(read)))!;
    return JSON.parse(new TextDecoder().decode(header));
  } finally {
    file.close();
  }
}

Deno.test("runPipeline leaves no folder after a rejected run", async () => {
  const parent = await Deno.makeTempDir();
  const out = join(parent, "out");
  // stories260K has a 512-token context, so a 1000-token sequence is rejected
  await assert.rejects(
    () =>
      runPipeline({
        model: STORIES_260K,
        out,
        bits: [2],
        seqLen: 1000,
        engine: "reference",
        quiet: true,
      }),
    /--seq-len 1000/,
  );
  await assert.rejects(() => Deno.stat(out), Deno.errors.NotFound);
  // a data file that does not exist is named with its flag
  await assert.rejects(
    () =>
      runPipeline({
        model: STORIES_260K,
        out,
        bits: [2],
        evalData: [join(parent, "missing.txt")],
        engine: "reference",
        quiet: true,
      }),
    /--eval-data .*missing\.txt: file not found/,
  );
  await assert.rejects(() => Deno.stat(out), Deno.errors.NotFound);
  await Deno.remove(parent, { recursive: true });
});

Deno.test({
  name:
    "runPipeline calibrates and evaluates a model with a tokenizer on the npm corpus by default",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "pipeline-corpus-" });
    try {
      const options: PipelineOptions = {
        model: REFERENCE_MODEL,
        out: join(dir, "out"),
        bits: [4],
        method: "rtn",
        compare: ["gptq"],
        calibTokens: 256,
        evalTokens: 256,
        seqLen: 128,
        engine: "reference",
        quiet: true,
      };
      const result = await runPipeline(options, { log: () => {} });
      assert.deepEqual(result.ran.slice(0, 3), [
        "corpus-calibration",
        "corpus-evaluation",
        "calibrate",
      ]);
      assert.deepEqual(result.manifest.settings.calibData, ["corpus"]);
      const { train, heldOut } = splitHeldOut(await loadNpmCorpus());
      const flat = (text: string) => text.replace(/\s+/g, " ");
      const trainText = train.map((d) => flat(d.text)).join(" ");
      const heldOutText = heldOut.map((d) => flat(d.text)).join(" ");
      const paragraphs = async (file: string) =>
        (await Deno.readTextFile(join(dir, "out", file))).split("\n\n").map(flat)
          .filter((p) => p.length > 200).slice(0, 20);
      for (const p of await paragraphs("calib_text.txt")) {
        assert.ok(trainText.includes(p), `calibration paragraph ${p}`);
        assert.ok(!heldOutText.includes(p), `calibration paragraph ${p}`);
      }
      for (const p of await paragraphs("eval_text.txt")) {
        assert.ok(heldOutText.includes(p), `evaluation paragraph ${p}`);
        assert.ok(!trainText.includes(p), `evaluation paragraph ${p}`);
      }
      // 256 tokens: two calibration sequences, two evaluation windows
      assert.equal(
        (result.manifest.steps["calibrate"].result as { sequences: number }).sequences,
        2,
      );
      const evaluated = result.manifest.steps["eval-original"].result as { tokens: number };
      assert.equal(evaluated.tokens, 254);
      assert.match(result.table, /rtn/);
      assert.match(result.table, /gptq/);

      // a second run reuses every step, the corpus samples included
      const again = await runPipeline(options, { log: () => {} });
      assert.deepEqual(again.ran, []);
      assert.ok(again.reused.includes("corpus-calibration"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("pipeline corpus data needs a tokenizer and stands alone", async () => {
  assert.throws(
    () =>
      resolvePipelineOptions({ model: "m", out: "o", bits: [2], calibData: ["corpus", "a.txt"] }),
    /cannot be mixed with files/,
  );
  // the corpus gives calibration and evaluation different parts, so both may name it
  const both = resolvePipelineOptions({
    model: "m",
    out: "o",
    bits: [2],
    calibData: ["corpus"],
    evalData: ["corpus"],
  });
  assert.equal(both.calibTokens, 8192);
  assert.equal(both.evalTokens, 8192);
  const dir = await Deno.makeTempDir({ prefix: "pipeline-corpus-" });
  try {
    await assert.rejects(
      () =>
        runPipeline({
          model: STORIES_260K,
          out: join(dir, "out"),
          bits: [2],
          calibData: ["corpus"],
          engine: "reference",
          quiet: true,
        }),
      /has no tokenizer/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
