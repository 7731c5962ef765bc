/**
 * Shared test fixtures: the path of the stories260K test model and a builder for small
 * synthetic models with seeded random weights.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { expectedTensors, type ModelConfig } from "../src/model/config.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { Rng } from "../src/util/rng.ts";

/** Path of the pretrained stories260K llama2.c checkpoint shipped beside the repository. */
export const STORIES_260K = fileURLToPath(
  new URL("../../shared/models/stories260K.bin", import.meta.url),
);

/** Path of the reference model shipped in this repository (models/reference, see its README.md). */
export const REFERENCE_MODEL = fileURLToPath(new URL("../models/reference", import.meta.url));

/** Greedy ids from BOS that llama2.c's run.c produces on stories260K (first 64). */
export const STORIES_GREEDY_64 = [
  461,
  461,
  401,
  401,
  401,
  461,
  378,
  455,
  473,
  456,
  435,
  299,
  362,
  409,
  283,
  264,
  283,
  452,
  288,
  13,
  431,
  431,
  431,
  431,
  431,
  431,
  431,
  431,
  431,
  431,
  431,
  431,
  431,
  293,
  430,
  417,
  363,
  416,
  315,
  342,
  418,
  424,
  400,
  442,
  402,
  303,
  266,
  299,
  374,
  466,
  396,
  303,
  271,
  362,
  390,
  469,
  306,
  469,
  423,
  314,
  347,
  305,
  356,
  333,
];

/**
 * Builds a config for a small synthetic Llama model; fields can be overridden.
 *
 * @param overrides Fields to change.
 */
export function tinyConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    architecture: "llama",
    dim: 24,
    hiddenDim: 40,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 6,
    vocabSize: 37,
    maxSeqLen: 64,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeStyle: "adjacent",
    tiedEmbeddings: false,
    qkvBias: false,
    ...overrides,
  };
}

/**
 * Creates seeded random weights for `config`: norms near 1, matrices N(0, 1/in).
 *
 * @param config Model hyperparameters.
 * @param seed RNG seed.
 */
export function randomWeights(config: ModelConfig, seed = 1): MemoryWeightStore {
  const rng = new Rng(seed);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of expectedTensors(config)) {
    const count = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(count);
    const isNorm = shape.length === 1 && !name.endsWith(".bias");
    const std = shape.length === 2 ? 1 / Math.sqrt(shape[1]) : 0.1;
    for (let i = 0; i < count; i++) data[i] = isNorm ? 1 + 0.1 * rng.normal() : std * rng.normal();
    tensors.set(name, { shape, data });
  }
  return new MemoryWeightStore(`synthetic(seed ${seed})`, tensors);
}
