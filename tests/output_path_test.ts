import assert from "node:assert/strict";
import { join } from "node:path";
import { checkOutputPath } from "../src/util/output_path.ts";
import { UsageError } from "../src/errors.ts";
import { STORIES_260K } from "./_helpers.ts";

Deno.test("checkOutputPath rejects an output that is an input", async () => {
  const dir = await Deno.makeTempDir();
  const input = join(dir, "model.bin");
  await Deno.writeTextFile(input, "x");
  await assert.rejects(() => checkOutputPath(input, [input]), UsageError);
  await assert.rejects(
    () => checkOutputPath(join(dir, ".", "model.bin"), [input]),
    /also an input/,
  );
  await Deno.symlink(input, join(dir, "link.bin"));
  await assert.rejects(() => checkOutputPath(join(dir, "link.bin"), [input]), /also an input/);
  await checkOutputPath(join(dir, "other.bin"), [input, undefined]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("checkOutputPath rejects a missing output folder", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(() => checkOutputPath(join(dir, "nope", "out.json"), []), /does not exist/);
  await Deno.remove(dir, { recursive: true });
});

// Each task that writes a file refuses to replace its own input, before doing any work.
const CASES: [string, (model: string) => string[]][] = [
  ["quantize", (m) => ["--model", m, "--method", "rtn", "--bits", "3", "--out", m]],
  [
    "calibrate",
    (m) => ["--model", m, "--sample-tokens", "512", "--seed", "1", "--seq-len", "128", "--out", m],
  ],
  ["allocate", (m) => ["--model", m, "--fisher", m, "--bits", "3", "--out", m]],
  ["compare", (m) => ["--model", m, "--out", m]],
  ["compare", (m) => ["--model", STORIES_260K, "--fisher", m, "--out", m]],
  ["convert", (m) => ["--model", m, "--to", "hf", "--out", m]],
];

for (const [task, args] of CASES) {
  Deno.test(`${task} task refuses to overwrite its input (${args("M").filter((a) => a.startsWith("--")).join(" ")})`, async () => {
    const dir = await Deno.makeTempDir();
    const model = join(dir, "model.bin");
    await Deno.copyFile(STORIES_260K, model);
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `tasks/${task}.ts`, ...args(model)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const message = new TextDecoder().decode(stderr);
    assert.equal(code, 1, message);
    assert.match(message, /also an input/);
    const after = await Deno.readFile(model), before = await Deno.readFile(STORIES_260K);
    assert.equal(after.length, before.length);
    assert.deepEqual(after.subarray(0, 64), before.subarray(0, 64));
    await Deno.remove(dir, { recursive: true });
  });
}

Deno.test("convert task rejects an output in a missing folder", async () => {
  const dir = await Deno.makeTempDir();
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "tasks/convert.ts",
      "--model",
      STORIES_260K,
      "--to",
      "gguf",
      "--out",
      join(dir, "nope", "m.gguf"),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 1);
  assert.match(new TextDecoder().decode(stderr), /does not exist: create it first/);
  await Deno.remove(dir, { recursive: true });
});
