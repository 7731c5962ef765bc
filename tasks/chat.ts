/**
 * `deno task chat`: an interactive chat with a model that has a tokenizer and a chat
 * template, streaming replies on stdout.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import process from "node:process";
import { loadModel } from "../src/model/load.ts";
import { createCausalLM, parseEngine } from "../src/eval/engine.ts";
import { GpuContext } from "../src/gpu/device.ts";
import { ChatSession } from "../src/model/chat.ts";
import { UsageError } from "../src/errors.ts";
import { MODEL_DEFAULT_HELP, parseNumber, REFERENCE_MODEL } from "./_args.ts";

const HELP = `Usage: deno task chat [--model PATH] [options]

Chats with a model in the terminal. Each line you type is a user message; the reply
streams back. Type /reset to start over and /exit (or end input) to quit.

Options:
  --model PATH          Hugging Face directory, GGUF file or quantized .safetensors with a
                        tokenizer and a chat template
                        (${MODEL_DEFAULT_HELP})
  --system TEXT         system message kept at the start of the conversation
  --template FILE       Jinja chat template to use instead of the model's own
  --max-tokens N        most tokens per reply (default 256)
  --temperature T       sampling temperature, 0 for greedy (default 0.8)
  --top-p P             nucleus sampling mass in (0, 1] (default 0.9)
  --seed S              sampler seed (default 1)
  --engine E            gpu (WebGPU) or reference (TypeScript) (default gpu)
  --quiet               print no speeds
  -h, --help            show this help`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      model: { type: "string", default: REFERENCE_MODEL },
      system: { type: "string" },
      template: { type: "string" },
      "max-tokens": { type: "string", default: "256" },
      temperature: { type: "string", default: "0.8" },
      "top-p": { type: "string", default: "0.9" },
      seed: { type: "string", default: "1" },
      engine: { type: "string", default: "gpu" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const engine = parseEngine(values.engine!);
  const topP = parseNumber("--top-p", values["top-p"]!, { greaterThan: 0, max: 1 });

  const model = await loadModel(values.model);
  let template = model.chatTemplate;
  if (values.template) {
    try {
      template = await Deno.readTextFile(values.template);
    } catch (err) {
      model.weights.close();
      throw new UsageError(`Cannot read --template ${values.template}: ${(err as Error).message}`);
    }
  }
  if (!model.tokenizer) {
    model.weights.close();
    throw new UsageError(
      `${values.model} has no tokenizer, so it cannot chat: use deno task generate --tokens`,
    );
  }
  if (!template) {
    model.weights.close();
    throw new UsageError(`${values.model} has no chat template: pass one with --template FILE`);
  }
  const gpu = engine === "gpu" ? await GpuContext.create() : null;
  const lm = await createCausalLM(model, engine, { gpu: gpu ?? undefined });
  const chat = new ChatSession(lm, {
    template,
    templateSource: values.template ?? `${values.model} chat template`,
    tokenizer: model.tokenizer,
    system: values.system,
    maxReplyTokens: parseNumber("--max-tokens", values["max-tokens"]!, { integer: true, min: 0 }),
    temperature: parseNumber("--temperature", values.temperature!, { min: 0 }),
    topP,
    seed: parseNumber("--seed", values.seed!, { integer: true, min: 0 }),
  });

  const encoder = new TextEncoder();
  const write = (text: string) => Deno.stdout.writeSync(encoder.encode(text));
  const lines = createInterface({ input: process.stdin, terminal: false });
  const prompt = () => Deno.stdin.isTerminal() && write("> ");
  try {
    prompt();
    for await (const line of lines) {
      const text = line.trim();
      if (text === "/exit") break;
      if (text === "/reset") {
        chat.messages.length = 0;
        prompt();
        continue;
      }
      if (!text) {
        prompt();
        continue;
      }
      try {
        const reply = await chat.send(text, write);
        write("\n");
        if (reply.droppedMessages) {
          console.error(`(dropped ${reply.droppedMessages} earlier messages to fit the context)`);
        }
        if (reply.stats.stopReason === "context-end") {
          console.error("(the reply filled the context and was cut off)");
        }
        if (!values.quiet) {
          console.error(
            `(${reply.stats.generatedTokens} tokens at ${
              reply.stats.decodeTokensPerSecond.toFixed(1)
            } tokens/s)`,
          );
        }
      } catch (err) {
        if (!(err instanceof UsageError)) throw err;
        console.error(`error: ${err.message}`);
      }
      prompt();
    }
  } finally {
    lines.close();
    lm.dispose();
    gpu?.destroy();
    model.weights.close();
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
