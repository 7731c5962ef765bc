import assert from "node:assert/strict";
import { join } from "node:path";
import { explainPlan } from "../src/allocate/explain.ts";
import { type Plan, planBitsPerWeight, validatePlan } from "../src/allocate/plan.ts";
import { readPlan, writePlan } from "../src/allocate/plan_io.ts";
import { FormatError } from "../src/errors.ts";

/** Builds a valid two-layer plan whose bpw fields are computed from the layout. */
function samplePlan(): Plan {
  const q = {
    rows: 4,
    cols: 64,
    vectorLength: 4,
    channelOrder: [2, 0, 3, 1],
    sensitivity: [3, 1, 4, 2],
    groups: [{ start: 0, end: 2, codebookSize: 16 }, { start: 2, end: 4, codebookSize: 4 }],
    bpw: 0,
  };
  const k = {
    ...q,
    rows: 2,
    channelOrder: [1, 0],
    sensitivity: [1, 1],
    groups: [{ start: 0, end: 2, codebookSize: 2 }],
  };
  q.bpw = planBitsPerWeight([q]);
  k.bpw = planBitsPerWeight([k]);
  const bpw = planBitsPerWeight([q, k]);
  return {
    format: "rsavq-plan",
    version: 2,
    bits: Math.ceil(Math.max(q.bpw, k.bpw)),
    scope: "layer",
    vectorLength: 4,
    bpw,
    layers: { "model.layers.0.self_attn.q_proj": q, "model.layers.0.self_attn.k_proj": k },
  };
}

Deno.test("writePlan and readPlan round-trip a plan", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "plan.json");
    const plan = samplePlan();
    await writePlan(path, plan);
    assert.deepEqual(await readPlan(path), plan);
    // Number arrays stay on one line each.
    assert.match(await Deno.readTextFile(path), /"channelOrder": \[2,0,3,1\]/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validatePlan names the bad field", () => {
  const q = "layers.model.layers.0.self_attn.q_proj";
  // change to a valid plan                                      field named in the error
  const cases: [(p: any) => void, string][] = [
    [(p) => (p.format = "other"), "format"],
    [(p) => (p.version = 1), "version"],
    [(p) => (p.bits = -1), "bits"],
    [(p) => (p.scope = "block"), "scope"],
    [(p) => (p.vectorLength = 0.5), "vectorLength"],
    [(p) => (p.distortion = "bogus"), "distortion"],
    [(p) => (p.layers = []), "layers"],
    [(p) => (p.layers = {}), "layers"],
    [(p) => (p.layers["model.layers.0.self_attn.q_proj"].rows = 0), `${q}.rows`],
    [
      (p) => (p.layers["model.layers.0.self_attn.q_proj"].channelOrder = [0, 1, 2]),
      `${q}.channelOrder`,
    ],
    [
      (p) => (p.layers["model.layers.0.self_attn.q_proj"].channelOrder = [0, 1, 1, 3]),
      `${q}.channelOrder[2]`,
    ],
    [
      (p) => (p.layers["model.layers.0.self_attn.q_proj"].sensitivity[1] = -1),
      `${q}.sensitivity[1]`,
    ],
    [(p) => (p.layers["model.layers.0.self_attn.q_proj"].sensitivity = "x"), `${q}.sensitivity`],
    [(p) => (p.layers["model.layers.0.self_attn.q_proj"].groups = []), `${q}.groups`],
    [
      (p) => (p.layers["model.layers.0.self_attn.q_proj"].groups[1].start = 3),
      `${q}.groups[1].start`,
    ],
    [(p) => (p.layers["model.layers.0.self_attn.q_proj"].groups[1].end = 5), `${q}.groups[1].end`],
    [(p) => (p.layers["model.layers.0.self_attn.q_proj"].groups[1].end = 3), `${q}.groups`],
    [
      (p) => (p.layers["model.layers.0.self_attn.q_proj"].groups[0].codebookSize = 12),
      `${q}.groups[0].codebookSize`,
    ],
    [
      (p) => (p.layers["model.layers.0.self_attn.q_proj"].groups[0].codebookSize = 131072),
      `${q}.groups[0].codebookSize`,
    ],
    [(p) => (p.layers["model.layers.0.self_attn.q_proj"].bpw += 0.01), `${q}.bpw`],
    [
      (p) => (p.layers["model.layers.0.self_attn.q_proj"].sensitivityKind = "hessian"),
      `${q}.sensitivityKind`,
    ],
    [(p) => (p.bpw += 0.01), "bpw"],
    [(p) => (p.bits = p.bpw * 0.9), `${q}.bpw`],
    [(p) => ((p.scope = "model"), (p.bits = p.bpw * 0.99)), "bpw"],
  ];
  for (const [change, field] of cases) {
    const plan: any = structuredClone(samplePlan());
    change(plan);
    assert.throws(
      () => validatePlan(plan, "plan.json"),
      (err: unknown) =>
        err instanceof FormatError && err.file === "plan.json" && err.field === field,
      `expected an error naming ${field}`,
    );
  }
  validatePlan(samplePlan(), "plan.json");
});

Deno.test("readPlan rejects missing and non-JSON files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "plan.json");
    await assert.rejects(
      () => readPlan(path),
      (err: unknown) => err instanceof FormatError && /not found/.test(err.message),
    );
    await Deno.writeTextFile(path, "{ not json");
    await assert.rejects(
      () => readPlan(path),
      (err: unknown) =>
        err instanceof FormatError && err.file === path && /Invalid JSON/.test(err.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writePlan writes nothing for an invalid plan", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "plan.json");
    const plan = samplePlan();
    plan.bpw = 1;
    await assert.rejects(() => writePlan(path, plan), FormatError);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("explainPlan tabulates every layer", () => {
  const plan = samplePlan();
  const lines = explainPlan(plan).split("\n");
  assert.equal(lines.length, 3 + 2);
  const q = lines.find((l) => l.startsWith("model.layers.0.self_attn.q_proj"))!;
  // K per group, index bits log2(K) / v per group, spread max/min = 4.
  assert.match(q, / 16,4 /);
  assert.match(q, / 1\.00,0\.50 /);
  assert.match(q, / 4\.00 /);
  assert.match(q, new RegExp(` ${plan.layers["model.layers.0.self_attn.q_proj"].bpw.toFixed(4)}$`));
  // Water-filling gives the more sensitive group more bits than the other.
  const ideal = q.split(/\s+/)[10].split(",").map(Number);
  assert.ok(ideal[0] > ideal[1], `water-filling ${ideal}`);
});
