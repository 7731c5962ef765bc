import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { add } from "../src/ops/add.ts";
import { addRef } from "../src/ops/add_ref.ts";
import { swiglu } from "../src/ops/swiglu.ts";
import { swigluRef } from "../src/ops/swiglu_ref.ts";
import { embedding } from "../src/ops/embedding.ts";
import { embeddingRef } from "../src/ops/embedding_ref.ts";
import { uploadMatrix } from "../src/ops/gpu_matrix.ts";
import { Rng } from "../src/util/rng.ts";

function assertClose(got: Float32Array, want: Float32Array, tol: number, label: string): void {
  assert.equal(got.length, want.length, `${label}: length`);
  for (let i = 0; i < want.length; i++) {
    assert.ok(
      Math.abs(got[i] - want[i]) <= tol * Math.max(1, Math.abs(want[i])),
      `${label} element ${i}: ${got[i]} vs ${want[i]}`,
    );
  }
}

async function readBack(
  gpu: GpuContext,
  buffer: GPUBuffer,
  record: (batch: ReturnType<GpuContext["batch"]>) => Promise<void>,
): Promise<Float32Array> {
  const batch = gpu.batch();
  await record(batch);
  const read = batch.read(buffer);
  await batch.submit();
  return read.f32().slice();
}

Deno.test("swiglu matches swigluRef", async () => {
  const gpu = await GpuContext.create();
  try {
    const rng = new Rng(1);
    // 4101 elements cross 64-invocation workgroups; large |g| checks exp overflow
    const n = 4101, offset = 3;
    const gate = Float32Array.from({ length: n + offset }, () => 8 * rng.normal());
    gate[offset] = -100;
    gate[offset + 1] = 100;
    const up = Float32Array.from({ length: n }, () => rng.normal());
    const gateBuf = gpu.upload(gate), upBuf = gpu.upload(up);
    const got = await readBack(
      gpu,
      gateBuf,
      (b) => swiglu(gpu, b, { gate: gateBuf, up: upBuf, n, gateOffset: offset }),
    );
    swigluRef({ gate, up, n, gateOffset: offset });
    assertClose(got, gate, 1e-6, "swiglu");
  } finally {
    gpu.destroy();
  }
});

Deno.test("add matches addRef for residuals and row biases", async () => {
  const gpu = await GpuContext.create();
  try {
    const rng = new Rng(2);
    // n | period | offsets
    for (
      const c of [{ n: 301, period: 301, xOffset: 0, yOffset: 0 }, {
        n: 7 * 43,
        period: 43,
        xOffset: 5,
        yOffset: 2,
      }]
    ) {
      const x = Float32Array.from({ length: c.xOffset + c.n }, () => rng.normal());
      const y = Float32Array.from({ length: c.yOffset + c.period }, () => rng.normal());
      const xBuf = gpu.upload(x), yBuf = gpu.upload(y);
      const got = await readBack(gpu, xBuf, (b) => add(gpu, b, { ...c, x: xBuf, y: yBuf }));
      addRef({ ...c, x, y });
      assertClose(got, x, 1e-6, `add period ${c.period}`);
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("embedding matches embeddingRef across table chunks", async () => {
  const gpu = await GpuContext.create();
  try {
    const rng = new Rng(3);
    const vocab = 101, dim = 13;
    const table = Float32Array.from({ length: vocab * dim }, () => rng.normal());
    // chunks of 7 rows (7 * 13 * 4 = 364 bytes): ids land in first, middle and last chunks
    const matrix = uploadMatrix(gpu, table, vocab, dim, "embed", 7 * dim * 4);
    assert.equal(matrix.chunks.length, Math.ceil(vocab / 7));
    const ids = [0, 100, 6, 7, 55, 55, 99, 13];
    const idsBuf = gpu.upload(new Uint32Array([42, ...ids]));
    const outBuf = gpu.createBuffer(ids.length * dim * 4);
    const got = await readBack(
      gpu,
      outBuf,
      (b) =>
        embedding(gpu, b, {
          ids: idsBuf,
          idsOffset: 1,
          table: matrix,
          out: outBuf,
          tokens: ids.length,
        }),
    );
    const want = new Float32Array(ids.length * dim);
    embeddingRef({ ids, table, dim, out: want });
    assertClose(got, want, 0, "embedding");
  } finally {
    gpu.destroy();
  }
});
