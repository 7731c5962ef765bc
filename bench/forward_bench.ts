/**
 * Forward-pass speed of the WebGPU path (GpuModel) against the TypeScript reference
 * (ReferenceModel), on stories260K and on a synthetic model. The synthetic model has
 * SmolLM-135M widths (d_model 576, 9 query heads of 64 with 3 key/value heads, hidden
 * 1536, vocab 49152), 4 blocks and seeded random weights. Tokens per second are the
 * tokens in the bench name divided by the time per iteration.
 *
 *   deno bench -A bench/forward_bench.ts
 *
 * @module
 */
import { GpuContext } from "../src/gpu/device.ts";
import { GpuModel } from "../src/model/gpu_model.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { loadLlama2c } from "../src/formats/llama2c.ts";
import type { CausalLM } from "../src/model/causal_lm.ts";
import type { ModelConfig } from "../src/model/config.ts";
import type { WeightStore } from "../src/model/model.ts";
import { randomWeights, STORIES_260K, tinyConfig } from "../tests/_helpers.ts";

const PREFILL_TOKENS = 64;
const DECODE_PROMPT = 16;
const DECODE_TOKENS = 16;

const gpu = await GpuContext.create();
const created: CausalLM[] = [];
globalThis.addEventListener("unload", () => {
  for (const lm of created) lm.dispose();
  gpu.destroy();
});

/** Deterministic token ids in [0, vocab). */
function tokenIds(count: number, vocab: number): number[] {
  return Array.from({ length: count }, (_, i) => (i * 7919 + 13) % vocab);
}

async function engines(config: ModelConfig, weights: WeightStore): Promise<[string, CausalLM][]> {
  const onGpu = await GpuModel.create(gpu, config, weights);
  const reference = await ReferenceModel.create(config, weights);
  created.push(onGpu);
  return [["gpu", onGpu], ["reference", reference]];
}

/** Registers the prefill and decode benches of one model. */
function register(
  label: string,
  config: ModelConfig,
  models: [string, CausalLM][],
  slow: boolean,
): void {
  const prefill = tokenIds(PREFILL_TOKENS, config.vocabSize);
  const prompt = tokenIds(DECODE_PROMPT, config.vocabSize);
  const decode = tokenIds(DECODE_TOKENS, config.vocabSize);
  const counts = slow ? { n: 3, warmup: 1 } : { n: 10, warmup: 2 };
  for (const [engine, lm] of models) {
    Deno.bench({
      name: `${label} prefill ${PREFILL_TOKENS} tokens (${engine})`,
      group: `${label} prefill`,
      baseline: engine === "reference",
      ...counts,
      async fn() {
        lm.reset();
        await lm.forward(prefill, { lastOnly: true });
      },
    });
    Deno.bench({
      name: `${label} decode ${DECODE_TOKENS} tokens after ${DECODE_PROMPT} (${engine})`,
      group: `${label} decode`,
      baseline: engine === "reference",
      ...counts,
      async fn(b) {
        lm.reset();
        await lm.forward(prompt, { lastOnly: true });
        b.start();
        for (const token of decode) await lm.forward([token], { lastOnly: true });
        b.end();
      },
    });
  }
}

const stories = await loadLlama2c(STORIES_260K);
register("stories260K", stories.config, await engines(stories.config, stories.weights), false);
stories.weights.close();

const synthetic = tinyConfig({
  dim: 576,
  nHeads: 9,
  nKvHeads: 3,
  headDim: 64,
  hiddenDim: 1536,
  vocabSize: 49152,
  maxSeqLen: 2048,
  nLayers: 4,
  tiedEmbeddings: true,
  ropeStyle: "half",
});
register("synthetic-576", synthetic, await engines(synthetic, randomWeights(synthetic, 1)), true);
