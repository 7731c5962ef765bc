/**
 * Plain TypeScript reference of {@linkcode QuantizedLinear}: dequantize the layer with the
 * quantized format's own functions, then take the dense product y = x @ W^T (f64 sums).
 *
 * @module
 */
import {
  dequantizeUniform,
  dequantizeVq,
  indexWidth,
  type LayerDesc,
  unpackChannelOrder,
  unpackIndices,
} from "../formats/quantized.ts";
import { decodeToF32 } from "../formats/dtype.ts";
import { matmulRef } from "./matmul_ref.ts";
import type { PackedTensorSource } from "./quantized_tensors.ts";

/**
 * Dense weights [rows, cols] of a quantized layer, read from its packed tensors.
 *
 * @param prefix Tensor prefix of the layer.
 * @param layer Layer metadata.
 * @param tensors Source of the packed tensors.
 * @returns W as f32, row-major [rows, cols].
 */
export async function dequantizeLayer(
  prefix: string,
  layer: LayerDesc,
  tensors: PackedTensorSource,
): Promise<Float32Array> {
  const u32 = async (name: string) => {
    const bytes = await tensors.readBytes(name);
    return new Uint32Array(bytes.slice().buffer);
  };
  const f16 = async (name: string) => decodeToF32(await tensors.readBytes(name), "F16");
  if (layer.kind === "uniform") {
    return dequantizeUniform(
      layer,
      await u32(`${prefix}.qweight`),
      await f16(`${prefix}.scales`),
      await f16(`${prefix}.zeros`),
    );
  }
  const perRow = Math.ceil(layer.cols / layer.vectorLength);
  const stages = [];
  for (const group of layer.groups) {
    for (const stage of group.stages) {
      const bits = indexWidth(stage.size);
      const indices = unpackIndices(
        await u32(stage.indices),
        (group.end - group.start) * perRow,
        bits,
      );
      stages.push({ group, codebook: await f16(stage.codebook), indices });
    }
  }
  const order = layer.channelOrder
    ? unpackChannelOrder(await u32(`${prefix}.channel_order`), layer.rows)
    : null;
  return dequantizeVq(layer, await f16(`${prefix}.scales`), order, stages, tensors.path, prefix);
}

/**
 * y[tokens, rows] = x[tokens, cols] @ W^T with W dequantized from the packed tensors.
 *
 * @example
 * ```ts ignore
 * const y = await quantizedLinearRef("model.layers.0.mlp.up_proj", layer, memoryTensors(data.tensors), x, 1);
 * ```
 * @param prefix Tensor prefix of the layer.
 * @param layer Layer metadata.
 * @param tensors Source of the packed tensors.
 * @param x Inputs [tokens, cols].
 * @param tokens Number of input rows.
 * @returns Outputs [tokens, rows].
 */
export async function quantizedLinearRef(
  prefix: string,
  layer: LayerDesc,
  tensors: PackedTensorSource,
  x: Float32Array,
  tokens: number,
): Promise<Float32Array> {
  const w = await dequantizeLayer(prefix, layer, tensors);
  const y = new Float32Array(tokens * layer.rows);
  matmulRef({ a: x, b: w, c: y, m: tokens, n: layer.rows, k: layer.cols, transB: true });
  return y;
}
