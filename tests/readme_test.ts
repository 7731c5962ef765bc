import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { REFERENCE_MODEL } from "./_helpers.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

Deno.test("README library script runs", async () => {
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const section = readme.slice(readme.indexOf("## Library"));
  const script = section.match(/```ts\n([\s\S]*?)```/)?.[1];
  assert.ok(script, "README has a ts block under ## Library");

  // Run it from a scratch folder, importing the checkout's mod.ts and the reference model.
  const dir = await Deno.makeTempDir();
  const source = script
    .replace(`"./mod.ts"`, JSON.stringify(join(ROOT, "mod.ts")))
    .replace(`"models/reference"`, JSON.stringify(REFERENCE_MODEL));
  await Deno.writeTextFile(join(dir, "script.ts"), source);
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", join(ROOT, "deno.json"), join(dir, "script.ts")],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(stdout);
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  assert.match(out, /ppl/);
  assert.match(out, /kld_mean/);
  await Deno.stat(join(dir, "q.safetensors"));
  await Deno.remove(dir, { recursive: true });
});
