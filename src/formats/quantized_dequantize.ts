/**
 * Dequantization of one quantized layer to dense f32 weights [rows, cols], exactly as the
 * quantizers compute their reconstructions (docs/format.md, "Dequantization").
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { unpackIndices } from "./quantized_pack.ts";
import type { UniformLayerDesc, VqGroupDesc, VqLayerDesc } from "./quantized_types.ts";

/**
 * Dense weights [rows, cols] of a vector-quantized layer:
 * W[r, q v + d] = scale[r] * sum over stages of codebook[index][d], in f32.
 *
 * @param layer Layer metadata.
 * @param scales Per-row scales [rows], in natural row order.
 * @param order Unpacked channel order [rows] (stored position -> row), or null for natural order.
 * @param stages Each stage's group, codebook [K, v] and unpacked indices.
 * @param source File name for errors.
 * @param prefix Layer prefix for errors.
 */
export function dequantizeVq(
  layer: VqLayerDesc,
  scales: Float32Array,
  order: Uint32Array | null,
  stages: { group: VqGroupDesc; codebook: Float32Array; indices: Uint32Array }[],
  source = "",
  prefix = "",
): Float32Array {
  const { rows, cols, vectorLength: v } = layer;
  const perRow = Math.ceil(cols / v);
  const sums = new Float32Array(rows * perRow * v);
  if (order) {
    const seen = new Uint8Array(rows);
    for (const row of order) {
      if (row >= rows || seen[row]) {
        throw new FormatError(
          source,
          `${prefix}.channel_order`,
          `Row ${row} is out of range [0, ${rows}) or repeated: expected a permutation`,
        );
      }
      seen[row] = 1;
    }
  }
  for (const { group, codebook, indices } of stages) {
    const k = codebook.length / v;
    for (let p = group.start; p < group.end; p++) {
      const row = order ? order[p] : p;
      for (let q = 0; q < perRow; q++) {
        const index = indices[(p - group.start) * perRow + q];
        if (index >= k) {
          throw new FormatError(
            source,
            prefix,
            `Index ${index} out of range for a codebook of ${k} entries`,
          );
        }
        const base = (row * perRow + q) * v;
        for (let d = 0; d < v; d++) sums[base + d] += codebook[index * v + d];
      }
    }
  }
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = scales[r] * sums[r * perRow * v + c];
  }
  return out;
}

/**
 * Dense weights [rows, cols] of a uniformly quantized layer:
 * W[r, c] = scale[r, g] * (code[r, c] - zero[r, g]) with g = floor(c / groupSize).
 *
 * @param layer Layer metadata.
 * @param codes Packed codes [rows, ceil(cols * bits / 32)] words.
 * @param scales Scales [rows, groups].
 * @param zeros Zero points [rows, groups].
 */
export function dequantizeUniform(
  layer: UniformLayerDesc,
  codes: Uint32Array,
  scales: Float32Array,
  zeros: Float32Array,
): Float32Array {
  const { rows, cols, bits, groupSize } = layer;
  const wordsPerRow = Math.ceil((cols * bits) / 32), groups = Math.ceil(cols / groupSize);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const q = unpackIndices(codes.subarray(r * wordsPerRow, (r + 1) * wordsPerRow), cols, bits);
    for (let c = 0; c < cols; c++) {
      const g = r * groups + Math.floor(c / groupSize);
      out[r * cols + c] = scales[g] * (q[c] - zeros[g]);
    }
  }
  return out;
}
