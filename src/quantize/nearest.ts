/**
 * Nearest-codeword search under a diagonal weighted metric, with RSAVQ's optional EDSG
 * term: a plain TypeScript reference (f64) and the WebGPU kernel
 * `kernels/nearest_codeword.wgsl` (f32), which splits long codebook scans across
 * dispatches so that no shader invocation passes llvmpipe's 65535-iteration loop cap.
 *
 * The score of codeword c for vector x with weights w is sum_d w_d (x_d - c_d)^2. With a
 * direction n and a running sum s, "projection" mode adds lambda (s + sum_d (c_d - x_d) n_d)^2
 * and "linear" mode adds lambda sum_d (c_d - x_d) n_d. The lowest score wins, and ties go to
 * the lowest index.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import { ShapeError } from "../errors.ts";

/** Form of the EDSG term in the score: none, a squared projection, or a linear term. */
export type EdsgMode = "none" | "projection" | "linear";

/** Shader value of each {@linkcode EdsgMode}. */
const EDSG_CODE: Record<EdsgMode, number> = { none: 0, projection: 1, linear: 2 };

/** Loop iterations llvmpipe allows one invocation in total (see the WebGPU notes). */
const LOOP_CAP = 65535;

/** Invocations per workgroup of the assignment kernel. */
const WORKGROUP = 64;

/** One assignment problem: vectors, their metric weights and a codebook. */
export interface NearestJob {
  /** Vector length v. */
  vectorLength: number;
  /** Vectors [n, v]. */
  points: Float32Array;
  /** Per-element metric weights [n, v] (0 for padding). */
  weights: Float32Array;
  /** Codebook [K, v]. */
  codebook: Float32Array;
  /** EDSG guide [n, v + 1]: the direction n_d for each element, then the running sum s. */
  guide?: Float32Array;
  /** EDSG mode; default "none". */
  mode?: EdsgMode;
  /** EDSG weight lambda; default 0. */
  lambda?: number;
}

/** Best codeword of every vector. */
export interface NearestResult {
  /** Codeword index per vector [n]. */
  index: Uint32Array;
  /** Its score per vector [n]. */
  score: Float64Array;
}

function checkJob(job: NearestJob): { n: number; k: number } {
  const v = job.vectorLength;
  const n = job.points.length / v, k = job.codebook.length / v;
  if (!Number.isInteger(n) || !Number.isInteger(k) || k < 1 || job.weights.length !== n * v) {
    throw new ShapeError(
      `Nearest codeword: points ${job.points.length}, weights ${job.weights.length} and codebook ${job.codebook.length} are not [n, ${v}], [n, ${v}] and [K >= 1, ${v}]`,
    );
  }
  if ((job.mode ?? "none") !== "none" && job.guide?.length !== n * (v + 1)) {
    throw new ShapeError(
      `Nearest codeword: EDSG guide has ${job.guide?.length ?? 0} values, expected [${n}, ${
        v + 1
      }]`,
    );
  }
  return { n, k };
}

/**
 * Finds each vector's best codeword by brute force in f64 (the reference for the kernel).
 *
 * @example
 * ```ts
 * import { nearestCodewordsCpu } from "./nearest.ts";
 * const r = nearestCodewordsCpu({ vectorLength: 1, points: new Float32Array([0.9]),
 *   weights: new Float32Array([1]), codebook: new Float32Array([0, 1, 2]) });
 * if (r.index[0] !== 1) throw new Error();
 * ```
 * @param job Vectors, weights, codebook and EDSG settings.
 */
export function nearestCodewordsCpu(job: NearestJob): NearestResult {
  const { n, k } = checkJob(job);
  const v = job.vectorLength, mode = job.mode ?? "none", lambda = job.lambda ?? 0;
  const { points, weights, codebook, guide } = job;
  const index = new Uint32Array(n), score = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0, bestScore = Infinity;
    const b = i * v, gb = i * (v + 1);
    for (let c = 0; c < k; c++) {
      let dist = 0, proj = 0;
      for (let d = 0; d < v; d++) {
        const e = codebook[c * v + d] - points[b + d];
        dist += weights[b + d] * e * e;
        if (mode !== "none") proj += e * guide![gb + d];
      }
      let s = dist;
      if (mode === "projection") {
        const t = guide![gb + v] + proj;
        s = dist + lambda * (t * t);
      } else if (mode === "linear") s = dist + lambda * proj;
      if (s < bestScore) {
        bestScore = s;
        best = c;
      }
    }
    index[i] = best;
    score[i] = bestScore;
  }
  return { index, score };
}

/** GPU buffers of one assignment, as {@linkcode recordNearest} binds them. */
export interface NearestBuffers {
  /** Vectors [n, v] f32. */
  points: GPUBuffer;
  /** Weights [n, v] f32. */
  weights: GPUBuffer;
  /** Codebook [K, v] f32. */
  codebook: GPUBuffer;
  /** Guide [n, v + 1] f32, or any small buffer when the mode is "none". */
  guide: GPUBuffer;
  /** Output [n, 2] u32: index, score bits. */
  out: GPUBuffer;
}

/**
 * Codewords one dispatch may scan for vector length `v` without passing the loop cap.
 *
 * @param v Vector length.
 */
export function codewordsPerDispatch(v: number): number {
  return Math.floor((LOOP_CAP - WORKGROUP) / (v + 2));
}

/**
 * Records the dispatches that assign `n` vectors to codewords [kStart, kEnd) of a codebook
 * into `batch` (several dispatches when the scan is longer than the loop cap allows).
 *
 * @param gpu Context (pipelines, limits).
 * @param batch Batch to record into.
 * @param buffers Bound buffers.
 * @param shape n vectors, codewords [kStart, kEnd), vector length v.
 * @param edsg Mode and lambda.
 * @param chunk Codewords per dispatch; default {@linkcode codewordsPerDispatch}(v).
 */
export async function recordNearest(
  gpu: GpuContext,
  batch: GpuBatch,
  buffers: NearestBuffers,
  shape: { n: number; kStart?: number; kEnd: number; v: number },
  edsg: { mode: EdsgMode; lambda: number } = { mode: "none", lambda: 0 },
  chunk = codewordsPerDispatch(shape.v),
): Promise<void> {
  const { n, v, kEnd } = shape;
  const kStart = shape.kStart ?? 0;
  if (chunk < 1 || chunk > codewordsPerDispatch(v)) {
    throw new ShapeError(
      `Codewords per dispatch ${chunk} must be in [1, ${codewordsPerDispatch(v)}]`,
    );
  }
  const pipeline = await gpu.pipeline("nearest_codeword", {
    VEC: v,
    WG: WORKGROUP,
    EDSG: EDSG_CODE[edsg.mode],
  });
  const groups = Math.ceil(n / WORKGROUP);
  const maxX = gpu.limits.maxComputeWorkgroupsPerDimension;
  const x = Math.min(groups, maxX), y = Math.ceil(groups / x);
  for (let k0 = kStart; k0 < kEnd; k0 += chunk) {
    const words = new Uint32Array(8);
    words.set([n, k0, Math.min(chunk, kEnd - k0), k0 === kStart ? 1 : 0]);
    new Float32Array(words.buffer)[4] = edsg.lambda;
    words[5] = x * WORKGROUP;
    const params = batch.uniform(words);
    batch.dispatch(pipeline, [
      buffers.points,
      buffers.weights,
      buffers.codebook,
      buffers.guide,
      buffers.out,
      params,
    ], [x, y]);
  }
}

/**
 * Runs several assignment jobs on the GPU in one submission with one readback.
 *
 * @param gpu WebGPU context.
 * @param jobs Assignment problems.
 * @param chunk Codewords per dispatch (tests lower it to cross dispatch boundaries).
 * @returns One result per job; scores are the kernel's f32 values.
 */
export async function nearestCodewordsGpu(
  gpu: GpuContext,
  jobs: NearestJob[],
  chunk?: number,
): Promise<NearestResult[]> {
  const batch = gpu.batch();
  const owned: GPUBuffer[] = [];
  const own = (b: GPUBuffer) => (owned.push(b), b);
  const reads = [];
  for (const job of jobs) {
    const { n, k } = checkJob(job);
    const v = job.vectorLength, mode = job.mode ?? "none";
    const buffers: NearestBuffers = {
      points: own(gpu.upload(job.points, "points")),
      weights: own(gpu.upload(job.weights, "weights")),
      codebook: own(gpu.upload(job.codebook, "codebook")),
      guide: own(mode === "none" ? gpu.createBuffer(16, "guide") : gpu.upload(job.guide!, "guide")),
      out: own(gpu.createBuffer(8 * n, "nearest")),
    };
    await recordNearest(
      gpu,
      batch,
      buffers,
      { n, kEnd: k, v },
      { mode, lambda: job.lambda ?? 0 },
      chunk,
    );
    reads.push({ n, handle: batch.read(buffers.out, 8 * n) });
  }
  try {
    await batch.submit();
  } finally {
    for (const b of owned) gpu.release(b);
  }
  return reads.map(({ n, handle }) => unpackNearest(handle.bytes(), n));
}

/**
 * Splits the kernel's [n, 2] u32 output into indices and scores.
 *
 * @param bytes Raw output bytes.
 * @param n Vectors.
 */
export function unpackNearest(bytes: Uint8Array, n: number): NearestResult {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, 2 * n);
  const f = new Float32Array(bytes.buffer, bytes.byteOffset, 2 * n);
  const index = new Uint32Array(n), score = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    index[i] = words[2 * i];
    score[i] = f[2 * i + 1];
  }
  return { index, score };
}
