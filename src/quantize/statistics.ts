/**
 * Calibration statistics as the quantizers read them: per linear layer L, `L.A` F32
 * [in, in], `L.G_diag` F32 [out], `L.grad_mean` F32 [out, in] and `L.fisher_diag` F32
 * [out, in] from the safetensors file that `deno task calibrate` writes (metadata
 * `format: rsavq-fisher`), or from memory in tests.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { SafetensorsFile } from "../formats/safetensors.ts";
import type { LayerStatistics } from "./types.ts";

/** Lazy per-layer statistics. */
export interface StatisticsSource {
  /** Where the statistics come from, for messages. */
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
    return s ? Promise.resolve(s) : Promise.reject(new FormatError("memory", `${prefix}.A`, "Missing statistics for this layer"));
  }

  close(): void {}
}

/**
 * Opens a statistics file written by `deno task calibrate`.
 *
 * @param path safetensors path.
 * @throws {FormatError} When the metadata names another format.
 */
export async function openStatistics(path: string): Promise<StatisticsSource> {
  let file: SafetensorsFile;
  try {
    file = await SafetensorsFile.open(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new FormatError(path, "", "Statistics file not found: run deno task calibrate first and pass its output with --fisher");
    throw err;
  }
  const format = file.metadata.format;
  if (format !== undefined && format !== "rsavq-fisher") {
    file.close();
    throw new FormatError(path, "__metadata__.format", `Expected "rsavq-fisher", got "${format}": pass the output of deno task calibrate`);
  }
  return {
    source: path,
    close: () => file.close(),
    async layer(prefix: string, rows: number, cols: number): Promise<LayerStatistics> {
      const read = async (suffix: string, shape: number[], required: boolean) => {
        const name = `${prefix}.${suffix}`;
        const info = file.tensors.get(name);
        if (!info) {
          if (required) throw new FormatError(path, name, "Missing tensor: the statistics do not cover this layer; rerun deno task calibrate on the same model");
          return undefined;
        }
        if (info.shape.join(",") !== shape.join(",")) throw new FormatError(path, name, `Expected shape [${shape}], found [${info.shape}]: the statistics belong to another model`);
        return await file.readF32(name);
      };
      return {
        A: (await read("A", [cols, cols], true))!,
        gDiag: await read("G_diag", [rows], false),
        gradMean: await read("grad_mean", [rows, cols], false),
        fisherDiag: await read("fisher_diag", [rows, cols], false),
      };
    },
  };
}
