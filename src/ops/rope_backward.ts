/**
 * Rotary position embedding and its gradient in double precision, and the table that runs
 * the gradient on the GPU. The forward pass rotates each pair of a head by the angle
 * pos * theta^(-2j / headDim). A rotation's transpose is its inverse, so the backward
 * pass rotates the gradient by the opposite angle. Pairs are (2j, 2j+1) in the "adjacent" style (llama2.c, GGUF) and
 * (j, j + headDim/2) in the "half" style (Hugging Face `rotate_half`).
 *
 * Shapes: x, y, dy [T, heads * headDim]; row t is at position startPos + t.
 *
 * @module
 */
import type { RopeStyle } from "../model/config.ts";
import { ropeTable } from "./rope.ts";

/** Rotary parameters shared by the forward and backward pass. */
export interface RopeParams {
  /** Number of heads in one row. */
  heads: number;
  /** Head width (even). */
  headDim: number;
  /** Base theta. */
  theta: number;
  /** Pair convention. */
  style: RopeStyle;
  /** Position of row 0; default 0. */
  startPos?: number;
}

/**
 * Rotates every head of every row by its position (forward pass), returning a new array.
 *
 * @example
 * ```ts
 * import { ropeForward64 } from "./rope_backward.ts";
 * const y = ropeForward64(new Float64Array([1, 0]), 1, { heads: 1, headDim: 2, theta: 10000, style: "adjacent" });
 * if (y[0] !== 1 || y[1] !== 0) throw new Error("position 0 must not rotate");
 * ```
 * @param x Input [T, heads * headDim].
 * @param T Number of rows.
 * @param p Rotary parameters.
 */
export function ropeForward64(x: Float64Array, T: number, p: RopeParams): Float64Array {
  return rotate(x, T, p, 1);
}

/**
 * Backpropagates dy through the rotation: the same pairs rotated by minus the angle.
 *
 * @param dy Output gradient [T, heads * headDim].
 * @param T Number of rows.
 * @param p Rotary parameters.
 * @returns dx [T, heads * headDim].
 */
export function ropeBackward64(dy: Float64Array, T: number, p: RopeParams): Float64Array {
  return rotate(dy, T, p, -1);
}

function rotate(x: Float64Array, T: number, p: RopeParams, sign: 1 | -1): Float64Array {
  const { heads, headDim, theta, style } = p;
  const half = headDim / 2, width = heads * headDim;
  const out = new Float64Array(T * width);
  for (let t = 0; t < T; t++) {
    const pos = (p.startPos ?? 0) + t;
    for (let j = 0; j < half; j++) {
      const angle = pos * Math.pow(theta, -(2 * j) / headDim);
      const cos = Math.cos(angle), sin = sign * Math.sin(angle);
      for (let h = 0; h < heads; h++) {
        const a = t * width + h * headDim + (style === "adjacent" ? 2 * j : j);
        const b = style === "adjacent" ? a + 1 : a + half;
        out[a] = x[a] * cos - x[b] * sin;
        out[b] = x[a] * sin + x[b] * cos;
      }
    }
  }
  return out;
}

/**
 * Builds the table that makes the forward rotary kernel (ops/rope.ts) run the backward
 * pass: the same (cos, sin) pairs as `ropeTable` with the sine negated, so each pair
 * rotates by minus its angle. Layout [positions, headDim / 2, 2] f32, angles in f64.
 *
 * @example
 * ```ts
 * import { ropeBackwardTable } from "./rope_backward.ts";
 * const t = ropeBackwardTable(2, 2, 10000);
 * if (Math.abs(t[3] + Math.sin(1)) > 1e-7) throw new Error("position 1 sine is negated");
 * ```
 * @param positions Number of positions.
 * @param headDim Head width (even).
 * @param theta Rotary base.
 */
export function ropeBackwardTable(positions: number, headDim: number, theta: number): Float32Array {
  const table = ropeTable(positions, headDim, theta);
  for (let i = 1; i < table.length; i += 2) table[i] = -table[i];
  return table;
}
