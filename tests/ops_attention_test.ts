import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { attention, attentionPlan, attentionScratchBytes } from "../src/ops/attention.ts";
import { attentionRef } from "../src/ops/attention_ref.ts";
import { LOOP_BUDGET } from "../src/ops/_common.ts";
import { Rng } from "../src/util/rng.ts";

interface Case {
  name: string;
  rows: number;
  pos0: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** Scratch size as a fraction of what one pass over all rows needs. */
  scratchFraction?: number;
}

function randomArray(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  return out;
}

async function maxRelativeError(gpu: GpuContext, c: Case, seed: number): Promise<number> {
  const rng = new Rng(seed);
  const positions = c.pos0 + c.rows;
  const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
  const q = randomArray(rng, c.rows * qDim);
  const kCache = randomArray(rng, positions * kvDim), vCache = randomArray(rng, positions * kvDim);
  const full = attentionScratchBytes(c.rows, positions, c.nHeads, c.headDim);
  const scratchBytes = Math.max(4, Math.floor(full * (c.scratchFraction ?? 1)));
  const buffers = {
    q: gpu.upload(q),
    kCache: gpu.upload(kCache),
    vCache: gpu.upload(vCache),
    out: gpu.createBuffer(q.byteLength),
    scratch: gpu.createBuffer(scratchBytes),
  };
  const batch = gpu.batch();
  await attention(gpu, batch, { ...buffers, ...c });
  const read = batch.read(buffers.out);
  await batch.submit();
  const got = read.f32();
  const want = new Float32Array(q.length);
  attentionRef({ q, kCache, vCache, out: want, ...c });
  let err = 0, max = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    max = Math.max(max, Math.abs(want[i]));
  }
  for (const b of Object.values(buffers)) gpu.release(b);
  return err / max;
}

// name | rows from pos0 | heads (query / key-value) | head width | scratch
const cases: Case[] = [
  {
    name: "prefill, GQA 3:1, odd head width",
    rows: 37,
    pos0: 0,
    nHeads: 6,
    nKvHeads: 2,
    headDim: 10,
  },
  { name: "prefill continuing a cache", rows: 5, pos0: 40, nHeads: 4, nKvHeads: 2, headDim: 8 },
  { name: "multi-head, no grouping", rows: 9, pos0: 3, nHeads: 3, nKvHeads: 3, headDim: 6 },
  { name: "decode past the loop cap", rows: 1, pos0: 1200, nHeads: 4, nKvHeads: 1, headDim: 64 },
  { name: "prefill past the loop cap", rows: 3, pos0: 1100, nHeads: 2, nKvHeads: 1, headDim: 64 },
  {
    name: "scratch split into passes",
    rows: 23,
    pos0: 70,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 12,
    scratchFraction: 0.2,
  },
];

Deno.test("attention matches attentionRef", async (t) => {
  const gpu = await GpuContext.create();
  try {
    for (const [i, c] of cases.entries()) {
      await t.step(c.name, async () => {
        const err = await maxRelativeError(gpu, c, 10 + i);
        assert.ok(err < 1e-5, `${c.name}: relative error ${err}`);
      });
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("attentionPlan keeps each invocation under the loop cap", () => {
  for (const headDim of [8, 64, 128, 256]) {
    for (const contextEnd of [1, 100, 2048, 131072]) {
      for (const rows of [1, 64]) {
        const { blockLen, nBlocks } = attentionPlan(rows, contextEnd, 8, headDim);
        assert.ok(blockLen * nBlocks >= contextEnd, "blocks cover the context");
        assert.ok(
          blockLen * (2 * headDim + 2) + headDim < LOOP_BUDGET,
          `block of ${blockLen} keys at head width ${headDim}`,
        );
        assert.ok(2 * nBlocks < LOOP_BUDGET, "merge loop");
      }
    }
  }
});
