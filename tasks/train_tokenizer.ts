/**
 * `deno task train-tokenizer`: train only the byte-level BPE tokenizer (on the training
 * part of the corpus, the held-out part excluded) and write tokenizer.json.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { checkOutputPath } from "../src/util/output_path.ts";
import { loadNpmCorpus, loadTextFiles, splitHeldOut } from "../src/data/corpus.ts";
import { bpeTokenizerJson, trainBpe } from "../src/train/bpe_trainer.ts";
import { writeTextFileAtomic } from "../src/util/atomic_write.ts";
import { UsageError } from "../src/errors.ts";

const HELP = `Usage: deno task train-tokenizer --out FILE [options]

Trains a byte-level BPE tokenizer and writes a Hugging Face tokenizer.json.

Options:
  --data-source SRC   "npm" (public-domain npm corpus) or text files, repeatable (default npm)
  --vocab-size N      vocabulary size incl. <|endoftext|> (default 4096)
  --min-frequency N   never merge pairs seen fewer times (default 2)
  --out FILE          output tokenizer.json path
  --quiet             print nothing
  -h, --help          show this help`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    allowPositionals: false,
    options: {
      "data-source": { type: "string", multiple: true },
      "vocab-size": { type: "string", default: "4096" },
      "min-frequency": { type: "string", default: "2" },
      out: { type: "string" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  if (!values.out) {
    throw new UsageError("Missing --out: pass the tokenizer.json path to write (see --help)");
  }
  const vocabSize = Number(values["vocab-size"]), minFrequency = Number(values["min-frequency"]);
  if (!Number.isSafeInteger(vocabSize)) {
    throw new UsageError(
      `Invalid --vocab-size ${JSON.stringify(values["vocab-size"])}: expected an integer`,
    );
  }
  if (!Number.isSafeInteger(minFrequency) || minFrequency < 1) {
    throw new UsageError(
      `Invalid --min-frequency ${
        JSON.stringify(values["min-frequency"])
      }: expected an integer of at least 1`,
    );
  }
  const sources = values["data-source"] ?? ["npm"];
  await checkOutputPath(values.out, sources);
  const docs = sources.length === 1 && sources[0] === "npm"
    ? await loadNpmCorpus()
    : await loadTextFiles(sources);
  const { train } = splitHeldOut(docs);
  const bpe = trainBpe(train.map((d) => d.text), { vocabSize, minFrequency, quiet: values.quiet });
  await writeTextFileAtomic(values.out, JSON.stringify(bpeTokenizerJson(bpe)));
  if (!values.quiet) {
    console.error(
      `wrote ${values.out}: ${bpe.vocab.length} tokens, ${bpe.merges.length} merges from ${train.length} documents`,
    );
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
