/**
 * Writes bench/tasks/corpus_heldout.jsonl: zero-shot questions cut from the held-out part
 * of the npm corpus, the text domain of the shipped reference model (zero-shot table in
 * docs/benchmarks.md). Deterministic: running it again gives the same file.
 *
 *   deno run -A bench/write_corpus_tasks.ts [--per-task N] [--seed S] [--out FILE]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { parseNumber } from "../tasks/_args.ts";
import { loadNpmCorpus, splitHeldOut } from "../src/data/corpus.ts";
import { corpusChoiceQuestions } from "../src/data/corpus_choice_tasks.ts";
import { writeTextFileAtomic } from "../src/util/atomic_write.ts";

const HELP = `Usage: deno run -A bench/write_corpus_tasks.ts [options]

Options:
  --per-task N   questions per task, next-sentence and next-word (default 200)
  --seed S       seed of every random pick (default 1)
  --out FILE     JSONL file to write (default bench/tasks/corpus_heldout.jsonl)
  --help         show this text`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      "per-task": { type: "string", default: "200" },
      seed: { type: "string", default: "1" },
      out: {
        type: "string",
        default: fileURLToPath(new URL("./tasks/corpus_heldout.jsonl", import.meta.url)),
      },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const seed = parseNumber("--seed", values.seed, { integer: true, min: 0 });
  const perTask = parseNumber("--per-task", values["per-task"], { integer: true, min: 1 });
  const { heldOut } = splitHeldOut(await loadNpmCorpus());
  const lines = corpusChoiceQuestions(heldOut, { seed, perTask });
  await writeTextFileAtomic(values.out, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
  console.error(
    `wrote ${lines.length} questions from ${heldOut.length} held-out documents to ${values.out}`,
  );
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
