/**
 * Row permutations that move q_proj/k_proj weights (and their biases) between the two
 * rotary conventions, so a converted checkpoint gives the same logits under the other
 * convention.
 *
 * Inside one head of width D (half = D / 2):
 * - `adjacent` rotates rows (2i, 2i+1) together (llama2.c, Meta, GGUF "llama").
 * - `half` rotates rows (i, i + half) together (Hugging Face `rotate_half`).
 *
 * adjacent to half moves row 2i+s to row s*half+i (s in {0, 1}), as `permute` in Hugging
 * Face's `convert_llama_weights_to_hf.py` does. half to adjacent is the inverse, as
 * `LlamaModel.permute` in llama.cpp's `convert_hf_to_gguf.py` does.
 *
 * @module
 */
import type { ModelConfig, RopeStyle } from "../model/config.ts";

/** q/k projection weights and biases, the tensors whose rows carry rotary pairs. */
const ROTARY_TENSOR = /^model\.layers\.\d+\.self_attn\.[qk]_proj\.(weight|bias)$/;

/**
 * Reorders the rows of a [nHeads * headDim, cols] tensor from one rotary convention to
 * the other. A bias is a tensor with cols = 1.
 *
 * @example Adjacent to half on one head of width 4
 * ```ts
 * import { permuteRopeRows } from "./rope_permute.ts";
 * const rows = new Float32Array([0, 1, 2, 3]); // [4, 1]: rows (0,1) and (2,3) are pairs
 * const out = permuteRopeRows(rows, 4, 1, "adjacent", "half");
 * if (out.join() !== "0,2,1,3") throw new Error("wrong order");
 * ```
 * @param data Row-major [nHeads * headDim, cols].
 * @param headDim Head width (even).
 * @param cols Row length (1 for a bias).
 * @param from Convention of `data`.
 * @param to Convention wanted.
 * @returns A new array in the `to` convention (a copy when from equals to).
 */
export function permuteRopeRows(
  data: Float32Array,
  headDim: number,
  cols: number,
  from: RopeStyle,
  to: RopeStyle,
): Float32Array {
  const out = new Float32Array(data.length);
  if (from === to) {
    out.set(data);
    return out;
  }
  const half = headDim / 2;
  const nHeads = data.length / (headDim * cols);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const adjacentRow = h * headDim + 2 * i + s;
        const halfRow = h * headDim + s * half + i;
        const [src, dst] = from === "adjacent" ? [adjacentRow, halfRow] : [halfRow, adjacentRow];
        out.set(data.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

/**
 * Converts tensor `name` of a model stored in convention `from` to convention `to`:
 * q_proj/k_proj weights and biases are permuted, every other tensor is returned as is.
 *
 * @param config Model hyperparameters (headDim and the per-tensor row counts).
 * @param name Canonical tensor name.
 * @param data Tensor values, row-major.
 * @param from Convention of the source.
 * @param to Convention of the destination.
 */
export function toRopeStyle(
  config: ModelConfig,
  name: string,
  data: Float32Array,
  from: RopeStyle,
  to: RopeStyle,
): Float32Array {
  if (from === to || !ROTARY_TENSOR.test(name)) return data;
  const cols = name.endsWith(".bias") ? 1 : config.dim;
  return permuteRopeRows(data, config.headDim, cols, from, to);
}
