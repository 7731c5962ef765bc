/**
 * The linear layers that calibration collects statistics for: all seven linears of every
 * block (not the embedding or the output head), with their widths and the input they
 * share. q, k and v read the same normed input, and so do gate and up, so their input
 * second moment A is accumulated once per group and written under each layer's name.
 *
 * @module
 */
import { BLOCK_LINEARS, type ModelConfig } from "../model/config.ts";
import type { BlockLinear } from "../model/reference_backward.ts";

/** One linear layer y = W x with W [outDim, inDim]. */
export interface CalibratedLinear {
  /** Canonical prefix, for example "model.layers.0.self_attn.q_proj". */
  prefix: string;
  /** Block index. */
  layer: number;
  /** The block's linear layer. */
  linear: BlockLinear;
  /** Input width n. */
  inDim: number;
  /** Output width m. */
  outDim: number;
  /** Key of the input this layer shares with others of its block, for example "0.attn". */
  inputGroup: string;
  /** Whether this layer is the first of its input group (the one that accumulates A). */
  ownsInput: boolean;
}

/**
 * Lists the calibrated linears of a model in forward order (block by block).
 *
 * @example
 * ```ts
 * import { calibratedLinears } from "./layers.ts";
 * const c = { architecture: "llama", dim: 8, hiddenDim: 16, nLayers: 1, nHeads: 2, nKvHeads: 1,
 *   headDim: 4, vocabSize: 10, maxSeqLen: 32, normEps: 1e-5, ropeTheta: 10000,
 *   ropeStyle: "half" as const, tiedEmbeddings: true, qkvBias: false };
 * const layers = calibratedLinears(c);
 * if (layers.length !== 7 || layers[6].inDim !== 16) throw new Error("down_proj reads the hidden width");
 * ```
 * @param config Model hyperparameters.
 */
export function calibratedLinears(config: ModelConfig): CalibratedLinear[] {
  const q = config.nHeads * config.headDim, kv = config.nKvHeads * config.headDim;
  const widths: Record<BlockLinear, [number, number, string]> = {
    "self_attn.q_proj": [config.dim, q, "attn"],
    "self_attn.k_proj": [config.dim, kv, "attn"],
    "self_attn.v_proj": [config.dim, kv, "attn"],
    "self_attn.o_proj": [q, config.dim, "o"],
    "mlp.gate_proj": [config.dim, config.hiddenDim, "mlp"],
    "mlp.up_proj": [config.dim, config.hiddenDim, "mlp"],
    "mlp.down_proj": [config.hiddenDim, config.dim, "down"],
  };
  const out: CalibratedLinear[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const seen = new Set<string>();
    for (const linear of BLOCK_LINEARS) {
      const [inDim, outDim, group] = widths[linear];
      out.push({
        prefix: `model.layers.${l}.${linear}`,
        layer: l,
        linear,
        inDim,
        outDim,
        inputGroup: `${l}.${group}`,
        ownsInput: !seen.has(group),
      });
      seen.add(group);
    }
  }
  return out;
}
