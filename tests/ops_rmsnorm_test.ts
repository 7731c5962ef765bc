import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { rmsnorm } from "../src/ops/rmsnorm.ts";
import { rmsnormRef } from "../src/ops/rmsnorm_ref.ts";
import { Rng } from "../src/util/rng.ts";

// rows | dim (below, across and far above the 64-invocation workgroup) | offsets
const cases = [
  { rows: 3, dim: 5, xOffset: 0, outOffset: 0 },
  { rows: 7, dim: 65, xOffset: 0, outOffset: 0 },
  { rows: 2, dim: 4099, xOffset: 0, outOffset: 0 },
  { rows: 1, dim: 576, xOffset: 2 * 576, outOffset: 3 },
];

Deno.test("rmsnorm matches rmsnormRef", async () => {
  const gpu = await GpuContext.create();
  try {
    const rng = new Rng(3);
    for (const c of cases) {
      const x = Float32Array.from({ length: c.xOffset + c.rows * c.dim }, () => 3 * rng.normal());
      const weight = Float32Array.from({ length: c.dim }, () => 1 + 0.1 * rng.normal());
      const out = new Float32Array(c.outOffset + c.rows * c.dim);
      const buffers = { x: gpu.upload(x), weight: gpu.upload(weight), out: gpu.upload(out) };
      const batch = gpu.batch();
      await rmsnorm(gpu, batch, { ...buffers, ...c, eps: 1e-5 });
      const read = batch.read(buffers.out);
      await batch.submit();
      const got = read.f32();
      rmsnormRef({ x, weight, out, ...c, eps: 1e-5 });
      for (let i = 0; i < out.length; i++) {
        assert.ok(
          Math.abs(got[i] - out[i]) <= 1e-5 * Math.max(1, Math.abs(out[i])),
          `rows ${c.rows} dim ${c.dim} element ${i}: ${got[i]} vs ${out[i]}`,
        );
      }
      for (const b of Object.values(buffers)) gpu.release(b);
    }
  } finally {
    gpu.destroy();
  }
});
