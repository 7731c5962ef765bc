/**
 * `deno task convert`: writes a checkpoint (llama2.c .bin, Hugging Face directory or GGUF)
 * as a Hugging Face directory or a GGUF file.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { UsageError } from "../src/errors.ts";
import { MODEL_DEFAULT_HELP, REFERENCE_MODEL } from "./_args.ts";
import { checkOutputPath } from "../src/util/output_path.ts";
import { loadModel } from "../src/model/load.ts";
import { CONVERT_DTYPES, convertModel, type ConvertTarget } from "../src/formats/convert.ts";

const HELP = `Usage: deno task convert [--model IN] --to hf|gguf [--dtype DTYPE] --out OUT [--quiet]

Writes a model in another checkpoint format. The output must not exist yet; it appears
only when the conversion succeeds.

Options:
  --model PATH   Input: llama2.c .bin, Hugging Face directory or GGUF file
                 (${MODEL_DEFAULT_HELP})
  --to FORMAT    hf (directory with config.json and safetensors) or gguf (one file)
  --dtype DTYPE  Stored precision: ${CONVERT_DTYPES.hf.join("|")} for hf, ${
  CONVERT_DTYPES.gguf.join("|")
} for gguf (default f32)
  --out PATH     Output directory (hf) or file (gguf)
  --quiet        Print no progress
  --help         Show this help`;

async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      to: { type: "string" },
      dtype: { type: "string" },
      out: { type: "string" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  for (const key of ["to", "out"] as const) {
    if (!values[key]) throw new UsageError(`Missing --${key}: run with --help for usage`);
  }
  await checkOutputPath(values.out!, [values.model]);
  const model = await loadModel(values.model!);
  try {
    await convertModel(model, {
      to: values.to as ConvertTarget,
      out: values.out!,
      dtype: values.dtype,
      quiet: values.quiet,
    });
  } finally {
    model.weights.close();
  }
  if (!values.quiet) console.error(`Wrote ${values.out}`);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (err) {
    console.error(`convert: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
