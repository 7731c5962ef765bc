/**
 * Seeded random quantized layers in the quantized-model format (metadata and packed
 * tensors in memory), for the quantized-kernel tests and benchmarks.
 *
 * @module
 */
import type { UniformLayerDesc, VqGroupDesc, VqLayerDesc } from "../src/formats/quantized.ts";
import {
  f16Tensor,
  indexWidth,
  packChannelOrder,
  packIndices,
  u32Tensor,
} from "../src/formats/quantized.ts";
import type { TensorToWrite } from "../src/formats/safetensors.ts";
import { Rng } from "../src/util/rng.ts";

/** A layer's metadata and the tensors it references. */
export interface LayerFixture<L> {
  prefix: string;
  layer: L;
  tensors: Record<string, TensorToWrite>;
}

/** Shape of a random VQ layer: per channel group, its row count and one codebook size per stage. */
export interface VqSpec {
  rows: number;
  cols: number;
  vectorLength: number;
  /** Rows of each group (they must sum to `rows`) and codebook sizes of its stages. */
  groups: { rows: number; sizes: number[] }[];
  /** Store a random channel order. */
  channelOrder: boolean;
  /** Codebook tensor names already present in `tensors` are reused (shared codebooks). */
  codebookName?: (group: number, stage: number, size: number) => string;
}

/**
 * Builds a random vector-quantized layer.
 *
 * @param spec Shape.
 * @param seed RNG seed.
 * @param prefix Tensor prefix.
 * @param tensors Tensor map to add to (shared codebooks stay as they are).
 */
export function randomVqLayer(
  spec: VqSpec,
  seed: number,
  prefix = "layer",
  tensors: Record<string, TensorToWrite> = {},
): LayerFixture<VqLayerDesc> {
  const rng = new Rng(seed);
  const { rows, cols, vectorLength: v } = spec;
  const perRow = Math.ceil(cols / v);
  const groups: VqGroupDesc[] = [];
  let start = 0;
  for (const [g, group] of spec.groups.entries()) {
    const stages = group.sizes.map((size, s) => {
      const codebook = spec.codebookName?.(g, s, size) ?? `${prefix}.codebook.g${g}.s${s}`;
      if (!tensors[codebook]) {
        // residual stages carry smaller corrections, as trained ones do
        const values = Float32Array.from(
          { length: size * v },
          () => rng.normal() * (s === 0 ? 1 : 0.25),
        );
        tensors[codebook] = f16Tensor(values, [size, v]);
      }
      const indices = Array.from({ length: group.rows * perRow }, () => rng.nextInt(size));
      const name = `${prefix}.indices.g${g}.s${s}`;
      const words = packIndices(indices, indexWidth(size));
      tensors[name] = u32Tensor(words, [words.length]);
      return { codebook, size, indices: name };
    });
    groups.push({ start, end: start + group.rows, stages });
    start += group.rows;
  }
  if (start !== rows) throw new Error(`Group rows sum to ${start}, expected ${rows}`);
  const scales = Float32Array.from({ length: rows }, () => 0.02 + 0.05 * rng.next());
  tensors[`${prefix}.scales`] = f16Tensor(scales, [rows]);
  if (spec.channelOrder) {
    const order = Uint32Array.from({ length: rows }, (_, i) => i);
    for (let i = rows - 1; i > 0; i--) {
      const j = rng.nextInt(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const words = packChannelOrder(order); // ceil(log2 rows) bits per entry
    tensors[`${prefix}.channel_order`] = u32Tensor(words, [words.length]);
  }
  const layer: VqLayerDesc = {
    kind: "vq",
    rows,
    cols,
    vectorLength: v,
    channelOrder: spec.channelOrder,
    groups,
  };
  return { prefix, layer, tensors };
}

/**
 * Builds a random uniformly quantized layer.
 *
 * @param layer Metadata (rows, cols, bits, groupSize).
 * @param seed RNG seed.
 * @param prefix Tensor prefix.
 */
export function randomUniformLayer(
  layer: UniformLayerDesc,
  seed: number,
  prefix = "layer",
): LayerFixture<UniformLayerDesc> {
  const rng = new Rng(seed);
  const { rows, cols, bits, groupSize } = layer;
  const groups = Math.ceil(cols / groupSize), wordsPerRow = Math.ceil((cols * bits) / 32);
  const qweight = new Uint32Array(rows * wordsPerRow);
  for (let r = 0; r < rows; r++) {
    const codes = Array.from({ length: cols }, () => rng.nextInt(2 ** bits));
    qweight.set(packIndices(codes, bits), r * wordsPerRow);
  }
  const scales = Float32Array.from({ length: rows * groups }, () => 0.01 + 0.05 * rng.next());
  const zeros = Float32Array.from({ length: rows * groups }, () => rng.next() * (2 ** bits - 1));
  const tensors = {
    [`${prefix}.qweight`]: u32Tensor(qweight, [rows, wordsPerRow]),
    [`${prefix}.scales`]: f16Tensor(scales, [rows, groups]),
    [`${prefix}.zeros`]: f16Tensor(zeros, [rows, groups]),
  };
  return { prefix, layer, tensors };
}

/**
 * Random inputs [tokens, cols], standard normal.
 *
 * @param tokens Rows.
 * @param cols Columns.
 * @param seed RNG seed.
 */
export function randomInputs(tokens: number, cols: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: tokens * cols }, () => rng.normal());
}
