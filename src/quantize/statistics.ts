/**
 * Calibration statistics as the quantizers read them: per linear layer L, `L.A` F32
 * [in, in], `L.G_diag` F32 [out], `L.grad_mean` F32 [out, in] and `L.fisher_diag` F32
 * [out, in] from the safetensors file that `deno task calibrate` writes (metadata
 * `format: rsavq-fisher`), or from memory in tests.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { FisherStatsFile } from "../calibrate/fisher_file.ts";
import type { LayerStatistics } from "./types.ts";
import type { Rng } from "../util/rng.ts";

/** Lazy per-layer statistics. */
export interface StatisticsSource {
  /** Source of the statistics (a path, or "memory"), for messages. */
  readonly source: string;
  /**
   * Statistics of one layer.
   *
   * @param prefix Layer prefix.
   * @param rows Output channels (for shape checks).
   * @param cols Input columns (for shape checks).
   */
  layer(prefix: string, rows: number, cols: number): Promise<LayerStatistics>;
  /** Releases the file. */
  close(): void;
}

/** Statistics already in memory, keyed by layer prefix. */
export class MemoryStatistics implements StatisticsSource {
  readonly source = "memory";
  #layers: Map<string, LayerStatistics>;

  /** @param layers Statistics by layer prefix. */
  constructor(layers: Map<string, LayerStatistics>) {
    this.#layers = layers;
  }

  layer(prefix: string): Promise<LayerStatistics> {
    const s = this.#layers.get(prefix);
    return s ? Promise.resolve(s) : Promise.reject(
      new FormatError("memory", `${prefix}.A`, "Missing statistics for this layer"),
    );
  }

  close(): void {}
}

/**
 * Opens a statistics file written by `deno task calibrate` (read with
 * src/calibrate/fisher_file.ts, one layer at a time).
 *
 * @param path safetensors path.
 * @throws {FormatError} When the file is missing or is not a version-1 statistics file.
 */
export async function openStatistics(path: string): Promise<StatisticsSource> {
  let file: FisherStatsFile;
  try {
    file = await FisherStatsFile.open(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new FormatError(
        path,
        "",
        "Statistics file not found: run deno task calibrate first and pass its output with --fisher",
      );
    }
    throw err;
  }
  return {
    source: path,
    close: () => file.close(),
    async layer(prefix: string, rows: number, cols: number): Promise<LayerStatistics> {
      const dims = file.layers.get(prefix);
      if (!dims) {
        throw new FormatError(
          path,
          `${prefix}.A`,
          "Missing statistics for this layer: rerun deno task calibrate on the same model",
        );
      }
      if (dims.inDim !== cols || dims.outDim !== rows) {
        throw new FormatError(
          path,
          `${prefix}.A`,
          `Statistics are for a ${dims.outDim}x${dims.inDim} layer but the model's is ${rows}x${cols}: they belong to another model`,
        );
      }
      const layer = await file.readLayer(prefix);
      return {
        A: layer.A,
        gDiag: layer.G_diag,
        gradMean: layer.grad_mean,
        fisherDiag: layer.fisher_diag,
      };
    },
  };
}

/**
 * Builds seeded synthetic statistics for layers (tests and demos without a calibration
 * run): A = X^T X / t from t = 2 * cols correlated random inputs, G_diag log-normal,
 * grad_mean N(0, 0.01^2) and fisher_diag = G_rr A_jj times a random factor in [0.5, 1.5).
 *
 * @param layers Prefix and shape of each layer.
 * @param rng Seeded generator.
 */
export function syntheticStatistics(
  layers: { prefix: string; rows: number; cols: number }[],
  rng: Rng,
): MemoryStatistics {
  const out = new Map<string, LayerStatistics>();
  for (const { prefix, rows, cols } of layers) {
    const t = 2 * cols;
    const x = new Float64Array(t * cols);
    for (let s = 0; s < t; s++) {
      const shared = rng.normal();
      for (let j = 0; j < cols; j++) {
        x[s * cols + j] = rng.normal() * (0.5 + (j % 7) / 7) + 0.7 * shared;
      }
    }
    const a = new Float32Array(cols * cols);
    for (let i = 0; i < cols; i++) {
      for (let j = i; j < cols; j++) {
        let sum = 0;
        for (let s = 0; s < t; s++) sum += x[s * cols + i] * x[s * cols + j];
        a[i * cols + j] = a[j * cols + i] = sum / t;
      }
    }
    const gDiag = Float32Array.from({ length: rows }, () => Math.exp(rng.normal()));
    const gradMean = Float32Array.from({ length: rows * cols }, () => 0.01 * rng.normal());
    const fisherDiag = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < cols; j++) {
        fisherDiag[r * cols + j] = gDiag[r] * a[j * cols + j] * (0.5 + rng.next());
      }
    }
    out.set(prefix, { A: a, gDiag, gradMean, fisherDiag });
  }
  return new MemoryStatistics(out);
}
