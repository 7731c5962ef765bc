/**
 * Writer of the quantized-model file: tensors plus the `format`, `version`, `config`,
 * `layers` and `quantization` metadata keys (docs/format.md).
 *
 * @module
 */
import { writeSafetensors } from "./safetensors.ts";
import { QUANTIZED_FORMAT, QUANTIZED_VERSION, type QuantizedModelData } from "./quantized_types.ts";

/**
 * Writes a quantized model atomically.
 *
 * @param path Output `.safetensors` path.
 * @param data Config, layer metadata, tensors and settings.
 */
export async function writeQuantizedModel(path: string, data: QuantizedModelData): Promise<void> {
  await writeSafetensors(path, data.tensors, {
    format: QUANTIZED_FORMAT,
    version: String(QUANTIZED_VERSION),
    config: JSON.stringify(data.config),
    layers: JSON.stringify(data.layers),
    quantization: JSON.stringify(data.quantization),
    ...Object.fromEntries(Object.entries(data.text ?? {}).filter(([, v]) => typeof v === "string")),
  });
}
