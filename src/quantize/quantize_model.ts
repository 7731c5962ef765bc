/**
 * Quantizes every linear layer of a model with one method and writes the quantized model
 * file (src/formats/quantized.ts). The embeddings, norms and output head are stored
 * unquantized (F32 by default) and never counted in bpw. `codebookScope` sets how widely VQ
 * codebooks are shared (src/quantize/scope.ts), and a shared codebook is stored and
 * counted once.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import {
  openQuantizedModel,
  type TokenizerText,
  writeQuantizedModel,
} from "../formats/quantized.ts";
import { readTokenizerText } from "../formats/hf.ts";
import { hfTokenizerFiles } from "../formats/convert.ts";
import { encodeFromF32 } from "../formats/dtype.ts";
import { BLOCK_LINEARS } from "../model/config.ts";
import type { LoadedModel } from "../model/model.ts";
import { formatScopeTable, type ScopeChoice, selectCodebookScope } from "./auto_scope.ts";
import { quantizeLayers, type ScopePass, type SharedCodebookInfo } from "./quantize_layers.ts";
import {
  checkQuantizeOptions,
  type QuantizeOptions,
  resolveQuantizeOptions,
} from "./quantize_options.ts";
import type { CodebookScope } from "./scope.ts";
import type { StatisticsSource } from "./statistics.ts";
import type { LayerResult, QuantMethod } from "./types.ts";

export {
  CODEBOOK_SCOPE_OPTIONS,
  type CodebookScopeOption,
  QUANTIZE_DEFAULTS,
  type QuantizeOptions,
} from "./quantize_options.ts";

/** Result of {@linkcode quantizeModel}. */
export interface QuantizeResult {
  /** Written file. */
  path: string;
  /** Quantization method used. */
  method: QuantMethod;
  /** Requested bpw. */
  targetBpw: number;
  /** Achieved bpw over all quantized layers, from stored bytes (shared codebooks once). */
  bpw: number;
  /** Per-layer results in model order. */
  layers: LayerResult[];
  /** Codebook scope used (the one chosen when `auto` was requested). */
  codebookScope: CodebookScope;
  /** Codebooks stored once for several layers (empty for the layer scope). */
  sharedCodebooks: SharedCodebookInfo[];
  /** Bytes of `sharedCodebooks`. */
  sharedBytes: number;
  /** Sum of the layers' Fisher-weighted errors, or null without statistics. */
  fisherError: number | null;
  /** With `auto`: every scope tried, its error and bpw. */
  scopeChoices: ScopeChoice[] | null;
  /** Wall-clock seconds, writing included. */
  seconds: number;
}

/**
 * Linear-layer prefixes of a model in forward order ("model.layers.0.self_attn.q_proj", ...).
 *
 * @param model Loaded model.
 */
export function linearPrefixes(model: LoadedModel): string[] {
  const out: string[] = [];
  for (let l = 0; l < model.config.nLayers; l++) {
    for (const which of BLOCK_LINEARS) out.push(`model.layers.${l}.${which}`);
  }
  return out;
}

/**
 * Quantizes a model and writes the quantized file.
 *
 * @example
 * ```ts ignore
 * const model = await loadModel("stories260K.bin");
 * const result = await quantizeModel(model, null, {
 *   method: "kmeans", bits: 3, codebookScope: "block", out: "q.safetensors",
 * });
 * console.log(result.bpw, result.sharedCodebooks.length);
 * ```
 * @param model Model to quantize.
 * @param stats Calibration statistics (required by gptq, vptq, rsavq and by
 *   `codebookScope: "auto"`), or null.
 * @param options Method, target bits, codebook scope, output and method settings.
 * @throws {UsageError} On bad options, missing statistics or a target below what fits.
 */
export async function quantizeModel(
  model: LoadedModel,
  stats: StatisticsSource | null,
  options: QuantizeOptions,
): Promise<QuantizeResult> {
  const o = resolveQuantizeOptions(options);
  checkQuantizeOptions(o, stats);

  const start = performance.now();
  const selected = new Set(o.layers ?? linearPrefixes(model));
  const prefixes = linearPrefixes(model).filter((p) => selected.has(p));

  // Quantize the selected linear layers with the requested scope, or with each and keep the best.
  let pass: ScopePass, scopeChoices: ScopeChoice[] | null = null;
  if (o.codebookScope === "auto") {
    const selection = await selectCodebookScope((scope) =>
      quantizeLayers(model, stats, o, prefixes, scope)
    );
    pass = selection.best;
    scopeChoices = selection.table;
    if (!o.quiet) console.error(formatScopeTable(selection.table, pass.scope, o.bits));
  } else {
    pass = await quantizeLayers(model, stats, o, prefixes, o.codebookScope);
  }
  const { tensors, results, bpw } = pass;

  // Store every other tensor (embeddings, norms, head, unselected layers) as it was.
  const quantized = new Set(prefixes.map((p) => `${p}.weight`));
  for (const name of model.weights.names()) {
    if (quantized.has(name)) continue;
    const data = await model.weights.read(name);
    tensors[name] = {
      dtype: o.unquantizedDtype,
      shape: model.weights.shape(name),
      data: encodeFromF32(data, o.unquantizedDtype),
    };
  }

  if (bpw > o.bits) {
    // Only a plan can overspend: without one every scope is sized to fit on its own.
    throw new UsageError(
      `The plan spends ${
        bpw.toFixed(4)
      } bpw, above --bits ${o.bits}: rerun deno task allocate with --bits ${o.bits} or raise --bits`,
    );
  }
  await writeQuantizedModel(o.out, {
    text: await sourceTokenizerText(model),
    config: model.config,
    layers: pass.layers,
    tensors,
    quantization: {
      method: o.method,
      targetBpw: o.bits,
      bpw,
      source: model.path,
      statistics: o.statisticsPath ?? stats?.source ?? null,
      unquantized: o.unquantizedDtype,
      settings: {
        vectorLength: o.vectorLength,
        codebookSize: o.codebookSize ?? null,
        residual: o.residual,
        codebookScope: pass.scope,
        groupSize: o.groupSize,
        plan: o.plan ? true : false,
        lambda: o.lambda,
        edsgMode: o.edsgMode,
        fisherMetric: o.fisherMetric,
        seed: o.seed,
        iterations: o.iterations,
        seedRounds: o.seedRounds,
        damp: o.damp,
      },
      sharedCodebooks: Object.fromEntries(
        pass.shared.map((c) => [c.name, { size: c.size, bytes: c.bytes, layers: c.layers }]),
      ),
      ...(scopeChoices ? { scopeSelection: scopeChoices } : {}),
      fisherError: pass.fisherError,
      layers: Object.fromEntries(
        results.map((r) => [r.prefix, {
          bpw: r.bpw,
          codebookSizes: r.codebookSizes,
          relativeError: r.relativeError,
          fisherError: r.fisherError,
        }]),
      ),
    },
  });

  const seconds = (performance.now() - start) / 1000;
  if (!o.quiet) {
    console.error(
      `quantize ${o.method}: ${bpw.toFixed(4)} bpw (target ${o.bits}) written to ${o.out}`,
    );
  }
  return {
    path: o.out,
    method: o.method,
    targetBpw: o.bits,
    bpw,
    layers: results,
    codebookScope: pass.scope,
    sharedCodebooks: pass.shared,
    sharedBytes: pass.sharedBytes,
    fisherError: pass.fisherError,
    scopeChoices,
    seconds,
  };
}

/**
 * Tokenizer files and chat template of the source model, carried into the quantized file so
 * that generate, chat and text evaluation work on it.
 */
async function sourceTokenizerText(model: LoadedModel): Promise<TokenizerText> {
  if (model.format === "hf") return await readTokenizerText(model.path, model.chatTemplate);
  if (model.format === "quantized") {
    const source = await openQuantizedModel(model.path);
    source.weights.close();
    return source.text;
  }
  if (model.format === "gguf") {
    // NOTE: only byte-level BPE ("gpt2") GGUF vocabularies have a tokenizer.json form, so
    // a quantized model from a SentencePiece ("llama") GGUF works on token ids only.
    const files = await hfTokenizerFiles(model);
    const decoder = new TextDecoder();
    const text: TokenizerText = {};
    for (const name of ["tokenizer.json", "tokenizer_config.json"] as const) {
      if (files[name]) text[name] = decoder.decode(files[name]);
    }
    if (model.chatTemplate) text.chat_template = model.chatTemplate;
    return text;
  }
  return {};
}
