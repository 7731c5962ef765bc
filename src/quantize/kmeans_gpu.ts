/**
 * The WebGPU side of weighted k-means: the vectors stay resident on the device while
 * kernels/nearest_codeword.wgsl assigns them and kernels/kmeans_update.wgsl recomputes
 * the codewords from CSR member lists, so a Lloyd iteration costs one round trip.
 *
 * @module
 */
import type { GpuContext } from "../gpu/device.ts";
import { recordNearest, unpackNearest } from "./nearest.ts";

/** Loop iterations llvmpipe allows one invocation in total (see the WebGPU notes). */
const LOOP_CAP = 65535;
/** Invocations per workgroup of the update kernel. */
const WORKGROUP = 64;

/**
 * Members per cluster that one update dispatch may visit for vector length `v`.
 *
 * @param v Vector length.
 */
export function membersPerPass(v: number): number {
  return Math.floor((LOOP_CAP - 4 * WORKGROUP) / (v + 2));
}

/**
 * Runs one weighted Lloyd update on the GPU (kmeans_update.wgsl), the counterpart of
 * `weightedCentroidsCpu` in src/quantize/kmeans.ts.
 *
 * @param gpu WebGPU context.
 * @param points Vectors [n, v].
 * @param weights Weights [n, v].
 * @param assignment Cluster of each vector [n].
 * @param codebook Current codewords [K, v].
 * @param v Vector length.
 * @param passCount Members per cluster visited by one dispatch; default from the loop cap.
 * @returns New codewords [K, v].
 */
export async function weightedCentroidsGpu(
  gpu: GpuContext,
  points: Float32Array,
  weights: Float32Array,
  assignment: Uint32Array,
  codebook: Float32Array,
  v: number,
  passCount = membersPerPass(v),
): Promise<Float32Array> {
  const state = new GpuKmeans(gpu, points, weights, v, codebook.length / v, passCount);
  try {
    gpu.write(state.codebook, codebook);
    return (await state.step(assignment)).codebook;
  } finally {
    state.destroy();
  }
}

/** CSR member lists of an assignment: cluster k owns members[offsets[k]..offsets[k+1]). */
function membersOf(
  assignment: Uint32Array,
  k: number,
): { offsets: Uint32Array; members: Uint32Array; largest: number } {
  const offsets = new Uint32Array(k + 1);
  for (const a of assignment) offsets[a + 1]++;
  let largest = 0;
  for (let c = 0; c < k; c++) {
    largest = Math.max(largest, offsets[c + 1]);
    offsets[c + 1] += offsets[c];
  }
  const fill = offsets.slice(0, k), members = new Uint32Array(assignment.length);
  for (let i = 0; i < assignment.length; i++) members[fill[assignment[i]]++] = i;
  return { offsets, members, largest };
}

/** GPU state of one k-means run: the vectors stay resident across seeding and Lloyd. */
export class GpuKmeans {
  readonly gpu: GpuContext;
  readonly n: number;
  readonly v: number;
  readonly k: number;
  readonly #buffers: GPUBuffer[] = [];
  readonly points: GPUBuffer;
  readonly weights: GPUBuffer;
  readonly codebook: GPUBuffer;
  readonly sums: GPUBuffer;
  readonly out: GPUBuffer;
  readonly offsets: GPUBuffer;
  readonly members: GPUBuffer;
  readonly guide: GPUBuffer;
  #passCount: number;

  constructor(
    gpu: GpuContext,
    points: Float32Array,
    weights: Float32Array,
    v: number,
    k: number,
    passCount: number,
  ) {
    this.gpu = gpu;
    this.v = v;
    this.k = k;
    this.n = points.length / v;
    this.#passCount = passCount;
    const own = (b: GPUBuffer) => (this.#buffers.push(b), b);
    this.points = own(gpu.upload(points, "kmeans points"));
    this.weights = own(gpu.upload(weights, "kmeans weights"));
    this.codebook = own(gpu.createBuffer(4 * k * v, "kmeans codebook"));
    this.sums = own(gpu.createBuffer(8 * k * v, "kmeans sums"));
    this.out = own(gpu.createBuffer(8 * this.n, "kmeans nearest"));
    this.offsets = own(gpu.createBuffer(4 * (k + 1), "kmeans offsets"));
    this.members = own(gpu.createBuffer(4 * this.n, "kmeans members"));
    this.guide = own(gpu.createBuffer(16, "unused guide"));
  }

  /** Weighted squared distance of every vector to its nearest among `centers` [B, v]. */
  async distanceTo(centers: Float32Array): Promise<Float64Array> {
    const buffer = this.gpu.upload(centers, "seed centers");
    try {
      const batch = this.gpu.batch();
      await recordNearest(this.gpu, batch, {
        points: this.points,
        weights: this.weights,
        codebook: buffer,
        guide: this.guide,
        out: this.out,
      }, { n: this.n, kEnd: centers.length / this.v, v: this.v });
      const read = batch.read(this.out, 8 * this.n);
      await batch.submit();
      return unpackNearest(read.bytes(), this.n).score;
    } finally {
      this.gpu.release(buffer);
    }
  }

  /** Optionally runs a Lloyd update from `assignment`, then assigns; one round trip. */
  async step(
    assignment: Uint32Array | null,
  ): Promise<{ index: Uint32Array; score: Float64Array; codebook: Float32Array }> {
    const { gpu, n, v, k } = this;
    const batch = gpu.batch();
    if (assignment) {
      const { offsets, members, largest } = membersOf(assignment, k);
      gpu.write(this.offsets, offsets);
      gpu.write(this.members, members);
      const pipeline = await gpu.pipeline("kmeans_update", { VEC: v, WG: WORKGROUP });
      const groups = Math.ceil(k / WORKGROUP);
      const x = Math.min(groups, gpu.limits.maxComputeWorkgroupsPerDimension),
        y = Math.ceil(groups / x);
      const passes = Math.max(1, Math.ceil(largest / this.#passCount));
      for (let p = 0; p < passes; p++) {
        const flags = (p === 0 ? 1 : 0) | (p === passes - 1 ? 2 : 0);
        const params = batch.uniform(
          new Uint32Array([k, p * this.#passCount, this.#passCount, flags, x * WORKGROUP, 0, 0, 0]),
        );
        batch.dispatch(pipeline, [
          this.points,
          this.weights,
          this.offsets,
          this.members,
          this.sums,
          this.codebook,
          params,
        ], [x, y]);
      }
    }
    await recordNearest(gpu, batch, {
      points: this.points,
      weights: this.weights,
      codebook: this.codebook,
      guide: this.guide,
      out: this.out,
    }, { n, kEnd: k, v });
    const nearest = batch.read(this.out, 8 * n), codebook = batch.read(this.codebook, 4 * k * v);
    await batch.submit();
    return { ...unpackNearest(nearest.bytes(), n), codebook: codebook.f32().slice() };
  }

  destroy(): void {
    for (const b of this.#buffers) this.gpu.release(b);
  }
}
