/**
 * The README.md model card written beside a trained model: what it is, what it was
 * trained on, how, for how long, and its held-out perplexity.
 *
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import { formatDuration } from "../util/progress.ts";
import type { TrainResult } from "./trainer.ts";

/** Facts the card reports. */
export interface ModelCardFacts {
  /** Training settings (the task's options). */
  options: {
    steps: number;
    batchSize: number;
    seqLen: number;
    lr: number;
    warmup: number;
    seed: number;
    weightDecay?: number;
    clip?: number;
    minLrRatio?: number;
  };
  /** Model config. */
  config: ModelConfig;
  /** Stream lengths in tokens. */
  tokens: { train: number; heldOut: number };
  /** Training outcome. */
  result: TrainResult;
  /** Final held-out loss and window count. */
  heldOut: { loss: number; windows: number };
  /** One line per data source. */
  sources: string[];
  /** Gradient engine's label. */
  engine: string;
  /** Stored dtype of model.safetensors. */
  dtype: string;
}

/**
 * Renders the model card as Markdown.
 *
 * @param f Facts of the run.
 * @returns README.md text.
 */
export function modelCard(f: ModelCardFacts): string {
  const c = f.config, o = f.options;
  let params = 0;
  for (const p of f.result.params.values()) params += p.length;
  const seen = o.steps * o.batchSize * (o.seqLen - 1);
  const curve = f.result.history.heldOut.map(([step, loss]) =>
    `| ${step} | ${loss.toFixed(4)} | ${Math.exp(loss).toFixed(2)} |`
  );
  return [
    "# Reference model trained by this toolkit",
    "",
    `A ${
      (params / 1e6).toFixed(2)
    } M-parameter Llama-architecture model trained from scratch with \`deno task train\`.`,
    "It exists so that the toolkit's tasks, tests and benchmarks have a small model that reads English.",
    "",
    "## Data",
    ...f.sources.map((s) => `- ${s}`),
    `- Held out (never trained on, also excluded from tokenizer training): documents whose id hash falls below 5%;`,
    `  ${f.tokens.heldOut} tokens. Training stream: ${f.tokens.train} tokens.`,
    "",
    "## Model",
    `- d_model ${c.dim}, ${c.nLayers} layers, ${c.nHeads} heads (${c.nKvHeads} key/value), head width ${c.headDim}, SwiGLU hidden ${c.hiddenDim}`,
    `- vocabulary ${c.vocabSize} (byte-level BPE trained on the training part; \`<|endoftext|>\` = id ${c.bosId} is BOS, EOS and document separator)`,
    `- context ${c.maxSeqLen}, RMSNorm eps ${c.normEps}, rotary theta ${c.ropeTheta}, tied input/output embedding`,
    "",
    "## Training",
    `- ${o.steps} steps of ${o.batchSize} windows of ${o.seqLen} tokens ([BOS, ${
      o.seqLen - 1
    } text tokens]), ${seen} tokens seen`,
    `- AdamW (beta 0.9/0.95, weight decay ${
      o.weightDecay ?? 0.1
    } on matrices only), peak lr ${o.lr}, ${o.warmup} warmup steps, cosine decay to ${
      o.minLrRatio ?? 0.1
    } x peak, gradient clipping at ${o.clip ?? 1}`,
    `- seed ${o.seed}; wall time ${
      formatDuration(f.result.history.seconds)
    } on the ${f.engine} gradient engine`,
    "",
    "## Held-out loss",
    "Every row uses the first --eval-windows windows of the held-out token stream: documents in",
    "corpus order, each window starting with BOS. The rows compare with each other, but not",
    "with the final figure below or with evaluations that sample other parts of the text.",
    "",
    "| step | loss (nats/token) | perplexity |",
    "| --- | --- | --- |",
    ...curve,
    "",
    `Final: loss ${f.heldOut.loss.toFixed(4)}, perplexity ${
      Math.exp(f.heldOut.loss).toFixed(2)
    } over the first ${f.heldOut.windows} non-overlapping windows of ${o.seqLen} tokens of the held-out stream, each starting with BOS.`,
    `The weights are stored as ${f.dtype}. The perplexities above were measured with the f32 training weights${
      f.dtype === "f32" ? "" : ", before rounding"
    }.`,
    "",
  ].join("\n");
}
