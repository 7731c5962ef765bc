/**
 * Per-layer Fisher statistics as the allocation reads them: for a linear layer with weight
 * [out = m, in = n], the diagonals of A = E[x x^T] and G = E[delta delta^T], the mean
 * gradient E[g_s] and the empirical diagonal Fisher E[g_s * g_s]. They come from a
 * calibration file or from memory.
 *
 * @module
 */
import { FisherStatsFile } from "../calibrate/fisher_file.ts";
import { FormatError } from "../errors.ts";

/** Statistics of one linear layer; absent fields were not in the file. */
export interface LayerFisherStats {
  /** Linear-layer prefix, without ".weight". */
  name: string;
  /** File the statistics came from, for error messages. */
  source?: string;
  /** Output channels m. */
  rows: number;
  /** Input columns n. */
  cols: number;
  /** Diagonal of A = E[x x^T], [n]. */
  aDiag?: Float32Array;
  /** Diagonal of G = E[delta delta^T], [m]. */
  gDiag?: Float32Array;
  /** Empirical diagonal Fisher E[g_s * g_s], [m, n] row-major. */
  fisherDiag?: Float32Array;
  /** Mean gradient E[g_s], [m, n] row-major. */
  gradMean?: Float32Array;
  /** Calibration sequences the means were taken over, when known. */
  sequences?: number;
}

/** Lazy access to the statistics of every calibrated layer. */
export interface FisherStatsSource {
  /** Path or label, for error messages. */
  readonly source: string;
  /** Linear-layer prefixes that have statistics. */
  layers(): string[];
  /** Reads one layer's statistics. */
  read(layer: string): Promise<LayerFisherStats>;
  /** Releases open files. */
  close(): void;
}

/**
 * Opens a calibration statistics file (written by `deno task calibrate`) as a source of
 * per-layer statistics. Metadata and shapes are validated on open; layers are read lazily.
 *
 * @example
 * ```ts ignore
 * const stats = await openFisherStats("fisher.safetensors");
 * const q = await stats.read("model.layers.0.self_attn.q_proj");
 * stats.close();
 * ```
 * @param path Statistics file.
 * @throws {FormatError} When the file is not a valid statistics file.
 */
export async function openFisherStats(path: string): Promise<FisherStatsSource> {
  try {
    await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new FormatError(
        path,
        "",
        "Statistics file not found: run deno task calibrate first, then pass its --out file with --fisher",
      );
    }
    throw err;
  }
  const file = await FisherStatsFile.open(path);
  return {
    source: path,
    layers: () => [...file.layers.keys()],
    read: async (layer) => {
      const s = await file.readLayer(layer);
      return {
        name: layer,
        source: path,
        rows: s.outDim,
        cols: s.inDim,
        aDiag: diagonal(s.A, s.inDim),
        gDiag: s.G_diag,
        fisherDiag: s.fisher_diag,
        gradMean: s.grad_mean,
        sequences: file.metadata.sequences,
      };
    },
    close: () => file.close(),
  };
}

/** Diagonal of a row-major [n, n] matrix. */
function diagonal(matrix: Float32Array, n: number): Float32Array {
  const d = new Float32Array(n); // [n]
  for (let i = 0; i < n; i++) d[i] = matrix[i * n + i];
  return d;
}

/**
 * Wraps statistics already in memory (tests, or statistics computed in the same process).
 *
 * @example
 * ```ts
 * import { memoryFisherStats } from "./fisher_source.ts";
 * const stats = memoryFisherStats("mem", [{ name: "l", rows: 1, cols: 2, aDiag: new Float32Array(2), gDiag: new Float32Array(1) }]);
 * if ((await stats.read("l")).cols !== 2) throw new Error();
 * ```
 * @param source Label used in error messages.
 * @param layers Statistics per layer.
 */
export function memoryFisherStats(source: string, layers: LayerFisherStats[]): FisherStatsSource {
  const byName = new Map(layers.map((l) => [l.name, { ...l, source: l.source ?? source }]));
  return {
    source,
    layers: () => [...byName.keys()],
    read: (layer) => {
      const stats = byName.get(layer);
      return stats
        ? Promise.resolve(stats)
        : Promise.reject(new FormatError(source, layer, "No statistics for this layer"));
    },
    close: () => {},
  };
}
