/**
 * The WebGPU calibration engine: runs each sequence's forward and backward pass with
 * {@linkcode GpuBackward} and accumulates the Fisher statistics in f32 buffers on the
 * device, in the same batch, so a sequence costs one submit and one small readback (its
 * losses). The sums are copied to the CPU accumulator only for checkpoints and the final
 * file; f32 values survive the round trip through the f64 checkpoint exactly, so resumed
 * runs continue bit for bit.
 *
 * Matrices of statistics are stored as row chunks like the weights, so layers larger
 * than one storage binding still work.
 *
 * @module
 */
import type { GpuBatch, GpuContext } from "../gpu/device.ts";
import type { ModelConfig } from "../model/config.ts";
import type { WeightStore } from "../model/model.ts";
import { GpuBackward, type GpuLinearTap } from "../model/gpu_backward.ts";
import { type GpuMatrix, uploadMatrix } from "../ops/gpu_matrix.ts";
import { matmul } from "../ops/matmul.ts";
import { linearWeightGradGpu } from "../ops/linear_backward.ts";
import { statsColsum } from "../ops/stats_colsum.ts";
import { statsGrad } from "../ops/stats_grad.ts";
import type { FisherAccumulator } from "./accumulator.ts";
import { type CalibratedLinear, calibratedLinears } from "./layers.ts";
import { UsageError } from "../errors.ts";
import type { GradientEngine } from "./engine.ts";

/** Device sums of one layer; names match the accumulator's state names. */
interface LayerSums {
  layer: CalibratedLinear;
  gDiag: GPUBuffer; // [out]
  g: GpuMatrix | null; // [out, out] with full G
  grad: GpuMatrix; // [out, in], chunked like the weight
  fisher: GpuMatrix; // [out, in], chunked like the weight
}

/**
 * Calibration on WebGPU.
 *
 * @example
 * ```ts ignore
 * const engine = await GpuEngine.create(await GpuContext.create(), model.config, model.weights, { fullG: false });
 * ```
 */
export class GpuEngine implements GradientEngine {
  readonly name = "gpu";
  #gpu: GpuContext;
  #pass: GpuBackward;
  #inputs = new Map<string, GpuMatrix>(); // A sums by input group, [in, in]
  #layers = new Map<string, LayerSums>(); // by "<layer>:<linear>"
  #scratch: GPUBuffer; // one chunk of a weight gradient
  #ownsGpu: boolean;
  #fullG = false;

  private constructor(gpu: GpuContext, pass: GpuBackward, scratch: GPUBuffer, ownsGpu: boolean) {
    this.#gpu = gpu;
    this.#pass = pass;
    this.#scratch = scratch;
    this.#ownsGpu = ownsGpu;
  }

  /**
   * Uploads the weights and allocates zeroed sums for every calibrated layer.
   *
   * @param gpu Device; destroyed by `dispose` when `ownsGpu`.
   * @param config Hyperparameters.
   * @param weights Tensor store.
   * @param options `fullG` keeps G [out, out] (must match the run's accumulator), `ownsGpu`
   *   (default true), and `maxChunkBytes` (tests lower it to force chunking).
   */
  static async create(
    gpu: GpuContext,
    config: ModelConfig,
    weights: WeightStore,
    options: { fullG: boolean; ownsGpu?: boolean; maxChunkBytes?: number },
  ): Promise<GpuEngine> {
    // the weights never change during calibration, so the faster transposed head is safe
    const pass = await GpuBackward.create(gpu, config, weights, {
      maxChunkBytes: options.maxChunkBytes,
      transposedHead: true,
    });
    const zeros = (rows: number, cols: number, label: string) =>
      uploadMatrix(gpu, new Float32Array(rows * cols), rows, cols, label, options.maxChunkBytes);
    let scratchSize = 1;
    const engine = new GpuEngine(gpu, pass, gpu.createBuffer(4), options.ownsGpu ?? true);
    engine.#fullG = options.fullG;
    for (const layer of calibratedLinears(config)) {
      if (layer.ownsInput) {
        engine.#inputs.set(
          layer.inputGroup,
          zeros(layer.inDim, layer.inDim, `${layer.inputGroup}.A`),
        );
      }
      const weight = pass.weights.blocks[layer.layer].linears[layer.linear];
      for (const ch of weight.chunks) scratchSize = Math.max(scratchSize, ch.rows * weight.cols);
      engine.#layers.set(`${layer.layer}:${layer.linear}`, {
        layer,
        gDiag: gpu.createBuffer(4 * layer.outDim, `${layer.prefix}.G_diag`),
        g: options.fullG ? zeros(layer.outDim, layer.outDim, `${layer.prefix}.G`) : null,
        grad: zeros(layer.outDim, layer.inDim, `${layer.prefix}.grad`),
        fisher: zeros(layer.outDim, layer.inDim, `${layer.prefix}.fisher`),
      });
    }
    gpu.release(engine.#scratch);
    engine.#scratch = gpu.createBuffer(4 * scratchSize, "gradient scratch");
    return engine;
  }

  async load(acc: FisherAccumulator): Promise<void> {
    if (acc.fullG !== this.#fullG) {
      throw new UsageError(
        `The gpu engine was created with fullG ${this.#fullG}, the run has ${acc.fullG}`,
      );
    }
    for (const [name, target] of this.#targets()) this.#upload(target, acc.sums.get(name)!);
    await this.#gpu.device.queue.onSubmittedWorkDone();
  }

  async accumulate(
    tokens: Int32Array,
    _acc: FisherAccumulator,
    labelSeed: number | null,
  ): Promise<number> {
    const { loss } = await this.#pass.run(tokens, {
      onLinear: (tap, batch) => this.#addTap(tap, batch),
      labelSeed,
    });
    return loss;
  }

  async store(acc: FisherAccumulator): Promise<void> {
    const batch = this.#gpu.batch();
    const reads = this.#targets().map(([name, target]) => {
      const chunks = target instanceof GPUBuffer ? null : target.chunks;
      return {
        name,
        target,
        handles: chunks
          ? chunks.map((ch) => batch.read(ch.buffer))
          : [batch.read(target as GPUBuffer)],
      };
    });
    await batch.submit();
    for (const { name, target, handles } of reads) {
      const sum = acc.sums.get(name)!;
      if (target instanceof GPUBuffer) {
        sum.set(handles[0].f32().subarray(0, sum.length));
        continue;
      }
      target.chunks.forEach((ch, i) =>
        sum.set(handles[i].f32().subarray(0, ch.rows * target.cols), ch.row0 * target.cols)
      );
    }
  }

  dispose(): void {
    this.#pass.dispose();
    if (this.#ownsGpu) this.#gpu.destroy();
  }

  /** Device sums paired with the accumulator's state names. */
  #targets(): [string, GpuMatrix | GPUBuffer][] {
    const out: [string, GpuMatrix | GPUBuffer][] = [];
    for (const [group, a] of this.#inputs) out.push([`${group}.A`, a]);
    for (const s of this.#layers.values()) {
      const p = s.layer.prefix;
      out.push([`${p}.G_diag`, s.gDiag], [`${p}.grad`, s.grad], [`${p}.fisher`, s.fisher]);
      if (s.g) out.push([`${p}.G`, s.g]);
    }
    return out;
  }

  #upload(target: GpuMatrix | GPUBuffer, sum: Float64Array): void {
    if (target instanceof GPUBuffer) {
      this.#gpu.write(target, Float32Array.from(sum));
      return;
    }
    for (const ch of target.chunks) {
      this.#gpu.write(
        ch.buffer,
        Float32Array.from(sum.subarray(ch.row0 * target.cols, (ch.row0 + ch.rows) * target.cols)),
      );
    }
  }

  /** Records one layer's statistics of the current sequence into its batch. */
  async #addTap(tap: GpuLinearTap, batch: GpuBatch): Promise<void> {
    const gpu = this.#gpu, s = this.#layers.get(`${tap.layer}:${tap.linear}`)!;
    const { inDim, outDim } = s.layer, T = tap.T;
    // A += x^T x, once per input group
    if (s.layer.ownsInput) {
      await gram(gpu, batch, tap.x, this.#inputs.get(s.layer.inputGroup)!, T, inDim);
    }
    // G_diag += sum_t delta_t^2, G += delta^T delta
    await statsColsum(gpu, batch, { x: tap.dy, out: s.gDiag, rows: T, cols: outDim, square: true });
    if (s.g) await gram(gpu, batch, tap.dy, s.g, T, outDim);
    // g_s = delta^T x chunk by chunk, then grad += g_s, fisher += g_s^2
    for (let i = 0; i < tap.weight.chunks.length; i++) {
      const ch = tap.weight.chunks[i];
      await linearWeightGradGpu(
        gpu,
        batch,
        { w: tap.weight, x: tap.x, T },
        tap.dy,
        ch,
        this.#scratch,
      );
      await statsGrad(gpu, batch, {
        g: this.#scratch,
        sum: s.grad.chunks[i].buffer,
        sumSq: s.fisher.chunks[i].buffer,
        n: ch.rows * inDim,
      });
    }
  }
}

/** Records sum += x^T x for x [T, n] into a chunked [n, n] matrix. */
async function gram(
  gpu: GpuContext,
  batch: GpuBatch,
  x: GPUBuffer,
  sum: GpuMatrix,
  T: number,
  n: number,
): Promise<void> {
  for (const ch of sum.chunks) {
    await matmul(gpu, batch, {
      a: x,
      b: x,
      c: ch.buffer,
      m: ch.rows,
      n,
      k: T,
      transA: true,
      lda: n,
      aOffset: ch.row0,
      accumulate: true,
    });
  }
}
