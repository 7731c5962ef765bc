import assert from "node:assert/strict";
import { GpuContext } from "../src/gpu/device.ts";
import { weightedCentroidsCpu, weightedKmeans } from "../src/quantize/kmeans.ts";
import { membersPerPass, weightedCentroidsGpu } from "../src/quantize/kmeans_gpu.ts";
import { Rng } from "../src/util/rng.ts";

function randomData(rng: Rng, n: number, v: number) {
  const points = Float32Array.from({ length: n * v }, () => rng.normal());
  const weights = Float32Array.from(
    { length: n * v },
    () => rng.next() < 0.05 ? 0 : 0.2 + rng.next(),
  );
  return { points, weights };
}

function assertClose(actual: Float32Array, expected: Float32Array, tol: number, what: string) {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= tol * (1 + Math.abs(expected[i])),
      `${what}[${i}]: ${actual[i]} vs ${expected[i]}`,
    );
  }
}

Deno.test("weightedCentroidsGpu matches the TypeScript update", async () => {
  const gpu = await GpuContext.create();
  try {
    const rng = new Rng(3);
    // case table: vectors, K, v, members per pass (undefined: the loop-cap default)
    const cases: [number, number, number, number | undefined][] = [
      [200, 70, 4, 3],
      [500, 130, 2, 17],
      [33, 40, 6, undefined],
    ];
    for (const [n, k, v, pass] of cases) {
      const { points, weights } = randomData(rng, n, v);
      const assignment = Uint32Array.from({ length: n }, () => rng.nextInt(k - 5)); // the last 5 codewords stay empty
      const codebook = Float32Array.from({ length: k * v }, () => rng.normal());
      const expected = weightedCentroidsCpu(points, weights, assignment, codebook, v);
      assertClose(
        await weightedCentroidsGpu(gpu, points, weights, assignment, codebook, v, pass),
        expected,
        1e-5,
        `case ${n}/${k}/${v}`,
      );
    }
    // One cluster larger than a pass at the loop-cap default, so the update needs two passes.
    const v = 8, n = membersPerPass(v) + 100;
    const { points, weights } = randomData(rng, n, v);
    const assignment = Uint32Array.from({ length: n }, (_, i) => (i % 50 === 0 ? 1 : 0));
    const codebook = new Float32Array(2 * v);
    const expected = weightedCentroidsCpu(points, weights, assignment, codebook, v);
    assertClose(
      await weightedCentroidsGpu(gpu, points, weights, assignment, codebook, v),
      expected,
      1e-4,
      "large cluster",
    );
  } finally {
    gpu.destroy();
  }
});

Deno.test("weightedKmeans objective never increases", async () => {
  const gpu = await GpuContext.create();
  try {
    for (const device of [gpu, null]) {
      const rng = new Rng(9);
      const { points, weights } = randomData(rng, 600, 4);
      const result = await weightedKmeans(points, weights, {
        k: 64,
        vectorLength: 4,
        iterations: 15,
        rng: new Rng(2),
        gpu: device,
      });
      assert.ok(result.objective.length >= 3, "ran fewer than two Lloyd iterations");
      for (let t = 1; t < result.objective.length; t++) {
        assert.ok(
          result.objective[t] <= result.objective[t - 1] * (1 + 1e-6),
          `iteration ${t}: ${result.objective[t]} > ${result.objective[t - 1]}`,
        );
      }
      assert.ok(
        result.objective.at(-1)! < 0.9 * result.objective[0],
        "Lloyd did not improve on the seeding",
      );
      // The reported objective is the weighted distance of the final assignment.
      let check = 0;
      for (let i = 0; i < 600; i++) {
        for (let d = 0; d < 4; d++) {
          const e = points[i * 4 + d] - result.codebook[result.assignment[i] * 4 + d];
          check += weights[i * 4 + d] * e * e;
        }
      }
      assert.ok(Math.abs(check - result.objective.at(-1)!) < 1e-4 * check);
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("weightedKmeans recovers every distinct vector", async () => {
  const gpu = await GpuContext.create();
  try {
    const rng = new Rng(4);
    const distinct = Float32Array.from({ length: 40 * 2 }, () => rng.normal());
    const points = new Float32Array(400 * 2);
    for (let i = 0; i < 400; i++) {
      points.set(distinct.subarray((i % 40) * 2, (i % 40) * 2 + 2), i * 2);
    }
    const weights = new Float32Array(800).fill(1);
    const a = await weightedKmeans(points, weights, {
      k: 40,
      vectorLength: 2,
      rng: new Rng(1),
      gpu,
    });
    const b = await weightedKmeans(points, weights, {
      k: 40,
      vectorLength: 2,
      rng: new Rng(1),
      gpu,
    });
    assert.deepEqual(a.codebook, b.codebook);
    // Every distinct vector is its own codeword, up to f32 rounding of the GPU's weighted means.
    assert.ok(a.objective.at(-1)! < 1e-9, `objective ${a.objective.at(-1)}`);
    for (let j = 0; j < 40; j++) {
      const [x, y] = [distinct[2 * j], distinct[2 * j + 1]];
      assert.ok(
        a.codebook.some((_, c) =>
          c % 2 === 0 && Math.abs(a.codebook[c] - x) < 1e-6 &&
          Math.abs(a.codebook[c + 1] - y) < 1e-6
        ),
        `vector ${j} has no codeword`,
      );
    }
  } finally {
    gpu.destroy();
  }
});
