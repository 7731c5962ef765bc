import assert from "node:assert/strict";
import { FormatError, GpuError } from "../src/errors.ts";
import { GpuContext } from "../src/gpu/device.ts";
import type { LayerDesc, VqLayerDesc } from "../src/formats/quantized.ts";
import { packChannelOrder, u32Tensor } from "../src/formats/quantized.ts";
import type { TensorToWrite } from "../src/formats/safetensors.ts";
import { LOOP_BUDGET } from "../src/ops/_common.ts";
import {
  CodebookCache,
  type CodebookPlacement,
  memoryTensors,
  QuantizedLinear,
  quantizedLinearRef,
  quantizedWeightBytes,
} from "../src/ops/quantized_linear.ts";
import {
  randomInputs,
  randomUniformLayer,
  randomVqLayer,
  type VqSpec,
} from "./_quantized_layers.ts";

interface RunOptions {
  tokens: number;
  placement?: CodebookPlacement;
  /** Extra elements before x[0, 0] and y[0, 0], a wider y row, and y += x W^T. */
  layout?: { xOffset: number; yOffset: number; ldyPad: number; accumulate: boolean };
}

// Largest |GPU - reference| over the largest |reference|: f32 sums of up to 1e5 terms stay far below 1e-4.
async function relativeError(
  gpu: GpuContext,
  prefix: string,
  layer: LayerDesc,
  tensors: Record<string, TensorToWrite>,
  options: RunOptions,
  seed: number,
): Promise<number> {
  const T = options.tokens, { rows, cols } = layer;
  const lay = options.layout ?? { xOffset: 0, yOffset: 0, ldyPad: 0, accumulate: false };
  const ldy = rows + lay.ldyPad;
  const source = memoryTensors(tensors);
  const x = randomInputs(T, cols, seed);
  const initial = randomInputs(1, lay.yOffset + (T - 1) * ldy + rows, seed + 1);

  const linear = await QuantizedLinear.upload(gpu, prefix, layer, source, {
    placement: options.placement,
  });
  const xBuffer = gpu.createBuffer((lay.xOffset + T * cols) * 4, "x");
  gpu.write(xBuffer, x, lay.xOffset * 4);
  const yBuffer = gpu.upload(initial, "y");
  const batch = gpu.batch();
  await linear.record(batch, {
    x: xBuffer,
    y: yBuffer,
    tokens: T,
    xOffset: lay.xOffset,
    yOffset: lay.yOffset,
    ldy,
    accumulate: lay.accumulate,
  });
  const read = batch.read(yBuffer);
  await batch.submit();
  const got = read.f32();
  linear.release();
  gpu.release(xBuffer);
  gpu.release(yBuffer);

  const want = await quantizedLinearRef(prefix, layer, source, x, T);
  let err = 0, max = 0;
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      const at = lay.yOffset + t * ldy + r;
      const expected = want[t * rows + r] + (lay.accumulate ? initial[at] : 0);
      err = Math.max(err, Math.abs(got[at] - expected));
      max = Math.max(max, Math.abs(expected));
    }
  }
  // elements of y outside the output rows must be untouched
  for (let i = 0; i < initial.length; i++) {
    const r = (i - lay.yOffset) % ldy;
    if (i < lay.yOffset || r >= rows) {
      assert.equal(got[i], initial[i], `y[${i}] outside the output was written`);
    }
  }
  return err / max;
}

// name | shape: vector length, rows, cols, channel groups with one codebook size per stage.
// Together the cases cover index widths 1 to 16, with power-of-two and other codebook sizes.
// They include cols that are not multiples of v (padded vectors), rows past one workgroup
// (4 rows x 64 invocations) and residual stages. Codebooks range from 8 bytes to 1 MiB, so
// "auto" places some in workgroup memory and some in storage on any device; the 32 KiB one
// is exactly lavapipe's maxComputeWorkgroupStorageSize.
const vqCases: (VqSpec & { name: string })[] = [
  {
    name: "v2 widths 1, 2, 5, 13",
    vectorLength: 2,
    rows: 150,
    cols: 67,
    channelOrder: true,
    groups: [{ rows: 40, sizes: [2] }, { rows: 50, sizes: [3, 2] }, { rows: 30, sizes: [31] }, {
      rows: 30,
      sizes: [8192],
    }],
  },
  {
    name: "v4 widths 3, 4, 7, 11",
    vectorLength: 4,
    rows: 331,
    cols: 130,
    channelOrder: true,
    groups: [{ rows: 270, sizes: [7] }, { rows: 41, sizes: [128, 16] }, {
      rows: 20,
      sizes: [2048],
    }],
  },
  {
    name: "v6 widths 6, 9, 10",
    vectorLength: 6,
    rows: 70,
    cols: 200,
    channelOrder: false,
    groups: [{ rows: 20, sizes: [64] }, { rows: 30, sizes: [512, 300] }, {
      rows: 20,
      sizes: [1000],
    }],
  },
  {
    name: "v8 widths 8, 12, 14",
    vectorLength: 8,
    rows: 100,
    cols: 64,
    channelOrder: true,
    groups: [{ rows: 66, sizes: [255] }, { rows: 14, sizes: [4096] }, {
      rows: 20,
      sizes: [16384, 256],
    }],
  },
  {
    name: "v8 widths 15, 16",
    vectorLength: 8,
    rows: 20,
    cols: 44,
    channelOrder: true,
    groups: [{ rows: 9, sizes: [32768] }, { rows: 11, sizes: [65536, 3] }],
  },
  {
    name: "v3 (odd) width 13",
    vectorLength: 3,
    rows: 33,
    cols: 50,
    channelOrder: true,
    groups: [{ rows: 33, sizes: [5000, 17] }],
  },
];

Deno.test("QuantizedLinear VQ matches the dequantized product", async (t) => {
  const gpu = await GpuContext.create();
  try {
    for (const [i, spec] of vqCases.entries()) {
      const { prefix, layer, tensors } = randomVqLayer(spec, 100 + i);
      // token counts: decode, one 8-token tile exactly, and tiles with a remainder
      for (const tokens of [1, 8, 13]) {
        for (const placement of ["auto", "storage"] as const) {
          await t.step(`${spec.name}, ${tokens} tokens, ${placement} codebooks`, async () => {
            const err = await relativeError(
              gpu,
              prefix,
              layer,
              tensors,
              { tokens, placement },
              7 * i + tokens,
            );
            assert.ok(err < 1e-5, `relative error ${err}`);
          });
        }
      }
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("QuantizedLinear VQ offsets, row stride and accumulate", async () => {
  const gpu = await GpuContext.create();
  try {
    const { prefix, layer, tensors } = randomVqLayer(vqCases[1], 200);
    for (const tokens of [1, 10]) {
      const layout = { xOffset: 5, yOffset: 3, ldyPad: tokens === 1 ? 0 : 7, accumulate: true };
      const err = await relativeError(
        gpu,
        prefix,
        layer,
        tensors,
        { tokens, layout },
        300 + tokens,
      );
      assert.ok(err < 1e-5, `${tokens} tokens: relative error ${err}`);
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("QuantizedLinear VQ splits rows above the loop cap", async () => {
  const gpu = await GpuContext.create();
  try {
    // 66001 vectors per row: more than 65535 iterations in one invocation without the split
    const cols = 2 * 66000 + 1;
    assert.ok(Math.ceil(cols / 2) > LOOP_BUDGET);
    const spec: VqSpec = {
      vectorLength: 2,
      rows: 9,
      cols,
      channelOrder: true,
      groups: [{ rows: 4, sizes: [8192, 3] }, { rows: 5, sizes: [65536] }],
    };
    const { prefix, layer, tensors } = randomVqLayer(spec, 400);
    for (const tokens of [1, 3]) {
      const err = await relativeError(gpu, prefix, layer, tensors, { tokens }, 401 + tokens);
      assert.ok(err < 1e-4, `${tokens} tokens: relative error ${err}`);
    }
  } finally {
    gpu.destroy();
  }
});

// name | rows | cols | bits | groupSize: every width 1 to 8, partial last groups, one group
// per row, and rows past one workgroup (4 rows x 64 invocations)
const uniformCases = [
  { name: "bits 1, group 32", rows: 70, cols: 96, bits: 1, groupSize: 32 },
  { name: "bits 2, partial group", rows: 65, cols: 100, bits: 2, groupSize: 64 },
  { name: "bits 3, straddling words", rows: 290, cols: 77, bits: 3, groupSize: 16 },
  { name: "bits 4, group 128", rows: 33, cols: 256, bits: 4, groupSize: 128 },
  { name: "bits 5, group of 1", rows: 12, cols: 21, bits: 5, groupSize: 1 },
  { name: "bits 6, one group per row", rows: 40, cols: 90, bits: 6, groupSize: 90 },
  { name: "bits 7, group past cols", rows: 66, cols: 45, bits: 7, groupSize: 1000 },
  { name: "bits 8, group 7", rows: 20, cols: 64, bits: 8, groupSize: 7 },
];

Deno.test("QuantizedLinear uniform matches the dequantized product", async (t) => {
  const gpu = await GpuContext.create();
  try {
    for (const [i, c] of uniformCases.entries()) {
      const { prefix, layer, tensors } = randomUniformLayer({ kind: "uniform", ...c }, 500 + i);
      for (const tokens of [1, 11]) {
        await t.step(`${c.name}, ${tokens} tokens`, async () => {
          const err = await relativeError(
            gpu,
            prefix,
            layer,
            tensors,
            { tokens },
            600 + i + tokens,
          );
          assert.ok(err < 1e-5, `relative error ${err}`);
        });
      }
    }
    const { prefix, layer, tensors } = randomUniformLayer(
      { kind: "uniform", ...uniformCases[2] },
      700,
    );
    const layout = { xOffset: 3, yOffset: 2, ldyPad: 5, accumulate: true };
    const err = await relativeError(gpu, prefix, layer, tensors, { tokens: 9, layout }, 701);
    assert.ok(err < 1e-5, `offsets and accumulate: relative error ${err}`);
  } finally {
    gpu.destroy();
  }
});

Deno.test("QuantizedLinear uniform splits rows above the loop cap", async () => {
  const gpu = await GpuContext.create();
  try {
    // each column is one iteration and each group one more: 70001 + 547 > 65535
    const layer = { kind: "uniform" as const, rows: 5, cols: 70001, bits: 3, groupSize: 128 };
    const { prefix, tensors } = randomUniformLayer(layer, 800);
    for (const tokens of [1, 9]) {
      const err = await relativeError(gpu, prefix, layer, tensors, { tokens }, 801 + tokens);
      assert.ok(err < 1e-4, `${tokens} tokens: relative error ${err}`);
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("QuantizedLinear uploads packed bytes, unpacked channel orders, shared codebooks once", async () => {
  const gpu = await GpuContext.create();
  try {
    const tensors: Record<string, TensorToWrite> = {};
    const shared = (_g: number, s: number, size: number) => `shared.codebook.s${s}.k${size}`;
    const spec: VqSpec = {
      vectorLength: 4,
      rows: 64,
      cols: 96,
      channelOrder: true,
      groups: [{ rows: 32, sizes: [256, 16] }, { rows: 32, sizes: [256] }],
      codebookName: shared,
    };
    const a = randomVqLayer(spec, 900, "a", tensors);
    const b = randomVqLayer(spec, 901, "b", tensors);
    const source = memoryTensors(tensors);
    const codebooks = new CodebookCache(gpu);
    const layers = [
      await QuantizedLinear.upload(gpu, "a", a.layer, source, { codebooks }),
      await QuantizedLinear.upload(gpu, "b", b.layer, source, { codebooks }),
    ];
    const stored = Object.values(tensors).reduce((sum, tensor) => sum + tensor.data.byteLength, 0);
    // Everything goes up as stored except the channel orders: stored at 6 bits per row
    // (64 rows, 48 bytes), they are unpacked to one u32 per row (256 bytes) for the kernels.
    assert.equal(tensors["a.channel_order"].data.byteLength, 48);
    assert.equal(quantizedWeightBytes(layers, codebooks), stored + 2 * (64 * 4 - 48));
    assert.equal(codebooks.bytes, (256 * 4 + 16 * 4) * 2);
    // a dense f32 copy would be 4 bytes per weight; indices here are 8 + 4 bits per 4 weights
    assert.ok(layers[0].weightBytes < (64 * 96 * 4) / 8);
    for (const layer of layers) layer.release();
    codebooks.release();
  } finally {
    gpu.destroy();
  }
});

Deno.test("QuantizedLinear.upload rejects bad layers", async (t) => {
  const gpu = await GpuContext.create();
  const spec: VqSpec = {
    vectorLength: 2,
    rows: 8,
    cols: 6,
    channelOrder: true,
    groups: [{ rows: 8, sizes: [5] }],
  };
  const upload = (
    layer: VqLayerDesc,
    tensors: Record<string, TensorToWrite>,
    placement?: CodebookPlacement,
  ) =>
    QuantizedLinear.upload(gpu, "layer", layer, memoryTensors(tensors, "test.safetensors"), {
      placement,
    });
  try {
    await t.step("index past a 5-entry codebook", async () => {
      const { layer, tensors } = randomVqLayer(spec, 1);
      // 3-bit indices: set the first to 7
      tensors["layer.indices.g0.s0"].data[0] |= 0b111;
      await assert.rejects(
        upload(layer, tensors),
        (e) => e instanceof FormatError && /Index 7 at 0 is out of range/.test(e.message),
      );
    });
    await t.step("channel order with a repeated row", async () => {
      const { layer, tensors } = randomVqLayer(spec, 2);
      const words = packChannelOrder([0, 1, 2, 3, 4, 5, 6, 6]); // 8 rows: 3 bits each
      tensors["layer.channel_order"] = u32Tensor(words, [words.length]);
      await assert.rejects(
        upload(layer, tensors),
        (e) => e instanceof FormatError && /channel_order: Entry 7 is 6/.test(e.message),
      );
    });
    await t.step("indices of the wrong size", async () => {
      const { layer, tensors } = randomVqLayer(spec, 3);
      tensors["layer.indices.g0.s0"] = u32Tensor(new Uint32Array(1), [1]);
      await assert.rejects(
        upload(layer, tensors),
        (e) => e instanceof FormatError && /Expected 12 bytes/.test(e.message),
      );
    });
    await t.step("vector length past the kernels' unrolling", async () => {
      const { layer, tensors } = randomVqLayer({ ...spec, vectorLength: 9 }, 4);
      await assert.rejects(
        upload(layer, tensors),
        (e) => e instanceof FormatError && /vector lengths 1 to 8, got 9/.test(e.message),
      );
    });
    await t.step("workgroup placement of a codebook past the limit", async () => {
      const { layer, tensors } = randomVqLayer(
        { ...spec, groups: [{ rows: 8, sizes: [65536] }] },
        5,
      );
      await assert.rejects(
        upload(layer, tensors, "workgroup"),
        (e) => e instanceof GpuError && /maxComputeWorkgroupStorageSize/.test(e.message),
      );
    });
    await t.step("shared codebook used with two sizes", async () => {
      const tensors: Record<string, TensorToWrite> = {};
      const name = () => "shared.codebook";
      const a = randomVqLayer({ ...spec, codebookName: name }, 6, "a", tensors);
      // the second layer claims 8 entries for the same 5-entry tensor
      const b = randomVqLayer(
        { ...spec, groups: [{ rows: 8, sizes: [8] }], codebookName: name },
        7,
        "b",
        tensors,
      );
      const source = memoryTensors(tensors, "test.safetensors");
      const codebooks = new CodebookCache(gpu);
      const first = await QuantizedLinear.upload(gpu, "a", a.layer, source, { codebooks });
      await assert.rejects(
        QuantizedLinear.upload(gpu, "b", b.layer, source, { codebooks }),
        (e) => e instanceof FormatError && /disagree on its size: 20 and 32 bytes/.test(e.message),
      );
      first.release();
      codebooks.release();
    });
    await t.step("uniform codes of the wrong size", async () => {
      const { prefix, layer, tensors } = randomUniformLayer(
        { kind: "uniform", rows: 4, cols: 40, bits: 3, groupSize: 8 },
        8,
      );
      tensors[`${prefix}.qweight`] = u32Tensor(new Uint32Array(4), [4, 1]);
      await assert.rejects(
        QuantizedLinear.upload(gpu, prefix, layer, memoryTensors(tensors, "test.safetensors")),
        (e) => e instanceof FormatError && /layer.qweight: Expected 64 bytes/.test(e.message),
      );
    });
  } finally {
    gpu.destroy();
  }
});
