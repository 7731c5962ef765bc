/**
 * RSAVQ: quantize Llama-family language models to 2-4 bits per weight with Riemannian
 * Sensitivity-Aware Vector Quantization, and run them on WebGPU.
 *
 * The steps a `deno task` runs are library functions here, each taking one typed options
 * object: {@linkcode calibrate} (Fisher statistics), {@linkcode allocateBits} (WCSG plan),
 * {@linkcode quantizeModel} (rtn, gptq, kmeans, vptq, rsavq), {@linkcode evaluate}
 * (perplexity and KL divergence) and {@linkcode evaluateChoiceTasks} (zero-shot accuracy).
 *
 * @example Calibrate, allocate, quantize and measure a checkpoint
 * ```ts ignore
 * import { allocateBits, calibrate, createCausalLM, createEngine, evaluate, loadCalibrationData,
 *   loadModel, openFisherStats, openStatistics, quantizeModel, sampleTokenStream } from "./mod.ts";
 *
 * const model = await loadModel("stories260K.bin");
 * const full = await createCausalLM(model, "reference");
 * const data = await loadCalibrationData(model, { sampleTokens: 2048, seed: 1, seqLen: 256 }, { sampler: async () => full });
 * await calibrate({ model, data, engine: await createEngine(model, "reference", { fullG: false }), out: "fisher.safetensors" });
 * const plan = await allocateBits(await openFisherStats("fisher.safetensors"), model.weights, { bits: 3 });
 * await quantizeModel(model, await openStatistics("fisher.safetensors"), { method: "rsavq", bits: 3, plan, out: "q.safetensors" });
 * const heldOut = await sampleTokenStream(full, { tokens: 1024, windowLength: 256, seed: 2 });
 * const quantized = await createCausalLM(await loadModel("q.safetensors"), "reference");
 * console.log(await evaluate(quantized, heldOut, { ctx: 256, ref: full }));
 * ```
 *
 * @module
 */

// Errors, randomness, progress
export { FormatError, GpuError, ShapeError, UsageError } from "./src/errors.ts";
export { Rng } from "./src/util/rng.ts";
export { Progress, type ProgressOptions } from "./src/util/progress.ts";

// WebGPU device and batching
export { GpuBatch, GpuContext, type GpuOptions } from "./src/gpu/device.ts";

// Model description and loading
export {
  BLOCK_LINEARS,
  expectedTensors,
  type ModelConfig,
  type RopeStyle,
  tensorNames,
} from "./src/model/config.ts";
export {
  type CheckpointFormat,
  type LoadedModel,
  MemoryWeightStore,
  type WeightStore,
} from "./src/model/model.ts";
export { loadModel } from "./src/model/load.ts";

// Checkpoint formats
export { loadLlama2c } from "./src/formats/llama2c.ts";
export { loadHf } from "./src/formats/hf.ts";
export { writeHf } from "./src/formats/hf_writer.ts";
export { loadGguf } from "./src/formats/gguf_model.ts";
export { writeGguf } from "./src/formats/gguf_writer.ts";
export { convertModel, type ConvertOptions } from "./src/formats/convert.ts";
export { SafetensorsFile, writeSafetensors } from "./src/formats/safetensors.ts";
export {
  dequantizeUniform,
  dequantizeVq,
  type LayerDesc,
  openQuantizedModel,
  packChannelOrder,
  QUANTIZED_FORMAT,
  type QuantizedModelFile,
  unpackChannelOrder,
  writeQuantizedModel,
} from "./src/formats/quantized.ts";

// Tokenizers and chat templates
export type { Tokenizer } from "./src/tokenizer/tokenizer.ts";
export { HfTokenizer } from "./src/tokenizer/hf_tokenizer.ts";
export { loadLlama2cTokenizer } from "./src/tokenizer/llama2c_tokenizer.ts";
export { type ChatMessage, renderChat } from "./src/tokenizer/chat_template.ts";

// Forward passes, generation and chat
export type { CausalLM, ForwardOptions } from "./src/model/causal_lm.ts";
export { ReferenceModel } from "./src/model/reference.ts";
export { GpuModel, type GpuModelOptions } from "./src/model/gpu_model.ts";
export { createCausalLM, type CreateLmOptions, type Engine } from "./src/eval/engine.ts";
export { argmax, type SamplerOptions, sampleToken } from "./src/model/sampler.ts";
export {
  generate,
  type GenerateOptions,
  type GenerateStats,
  generateTokens,
} from "./src/model/generate.ts";
export { type ChatReply, ChatSession, type ChatSessionOptions } from "./src/model/chat.ts";

// Data
export { type SampleStreamOptions, sampleTokenStream } from "./src/data/sample_stream.ts";
export {
  type CorpusTokenOptions,
  readCorpusTokens,
  readTokenFile,
  type TokenFileOptions,
} from "./src/data/token_files.ts";
export {
  CORPUS_DATA,
  type CorpusDocument,
  type CorpusSampleOptions,
  type CorpusSplit,
  loadNpmCorpus,
  sampleCorpusText,
  splitHeldOut,
} from "./src/data/corpus.ts";
export {
  type CorpusChoiceOptions,
  corpusChoiceQuestions,
  type NativeChoiceLine,
} from "./src/data/corpus_choice_tasks.ts";
export { type ChoiceQuestion, readChoiceTasks } from "./src/data/choice_tasks.ts";

// Calibration: Fisher statistics
export {
  calibrate,
  type CalibrateOptions,
  type CalibrateResult,
} from "./src/calibrate/calibrate.ts";
export {
  type CalibrationData,
  type DataSpec,
  loadCalibrationData,
  type LoadDataOptions,
} from "./src/calibrate/data.ts";
export { createEngine, type CreateEngineOptions } from "./src/calibrate/create_engine.ts";
export { CpuEngine, type GradientEngine } from "./src/calibrate/engine.ts";
export { GpuEngine } from "./src/calibrate/gpu_engine.ts";
export { ReferenceBackward } from "./src/model/reference_backward.ts";
export { GpuBackward, type GpuBackwardOptions } from "./src/model/gpu_backward.ts";
export {
  FISHER_FORMAT,
  type FisherLabels,
  type FisherLayer,
  type FisherStats,
  FisherStatsFile,
  readFisherStats,
  writeFisherStats,
} from "./src/calibrate/fisher_file.ts";

// Allocation: WCSG bit plans
export {
  allocateBits,
  type AllocateOptions,
  type DistortionKind,
  type TrialQuantization,
} from "./src/allocate/allocate_bits.ts";
export { type FisherStatsSource, openFisherStats } from "./src/allocate/fisher_source.ts";
export {
  type Plan,
  planBitsPerWeight,
  planBytes,
  planScopeBitsPerWeight,
  validatePlan,
} from "./src/allocate/plan.ts";
export { planCodebookScope } from "./src/quantize/plan.ts";
export { readPlan, writePlan } from "./src/allocate/plan_io.ts";
export { explainPlan } from "./src/allocate/explain.ts";

// Quantization
export {
  linearPrefixes,
  quantizeModel,
  type QuantizeResult,
} from "./src/quantize/quantize_model.ts";
export { QUANTIZE_DEFAULTS, type QuantizeOptions } from "./src/quantize/quantize_options.ts";
export { QUANT_METHODS, type QuantMethod } from "./src/quantize/types.ts";
export { openStatistics, type StatisticsSource } from "./src/quantize/statistics.ts";
export { type TrialOptions, trialQuantization } from "./src/quantize/trial.ts";
export {
  bitsPerWeight,
  codebookBytes,
  storesChannelOrder,
  uniformLayerBytes,
  vqLayerBytes,
} from "./src/quantize/bpw.ts";
export { CODEBOOK_SCOPES, type CodebookScope, groupLayersByScope } from "./src/quantize/scope.ts";
export {
  CODEBOOK_SCOPE_OPTIONS,
  type CodebookScopeOption,
} from "./src/quantize/quantize_options.ts";
export { QuantizedLinear } from "./src/ops/quantized_linear.ts";

// Evaluation
export { type EvalResult, evaluate, type EvaluateOptions } from "./src/eval/evaluate.ts";
export {
  type ChoiceEvalResult,
  evaluateChoiceTasks,
  type ZeroShotOptions,
} from "./src/eval/zero_shot.ts";
export { type CompareOptions, compareQuantizers } from "./src/eval/compare.ts";

// Pipeline and report
export {
  PIPELINE_DEFAULTS,
  type PipelineOptions,
  resolvePipelineOptions,
} from "./src/pipeline/options.ts";
export {
  type PipelineHooks,
  type PipelineResult,
  runPipeline,
} from "./src/pipeline/run_pipeline.ts";
export { type Manifest, readManifest, type StepRecord } from "./src/pipeline/manifest.ts";
export { formatSummaryTable, type ResultRow } from "./src/pipeline/summary.ts";
export { buildReportHtml, type ReportData, writeReport } from "./src/report/report.ts";

// Training (the reference model)
export { trainBpe } from "./src/train/bpe_trainer.ts";
export { trainModel } from "./src/train/train_model.ts";

// Types and constants that the signatures above use
export { type AverageDifference, type TaskDifference } from "./src/eval/choice_metrics.ts";
export { type BackwardOptions, type BackwardResult } from "./src/model/reference_backward.ts";
export { type Binding, type KernelConstants, type ReadHandle } from "./src/gpu/device.ts";
export { type BpeTrainOptions, type TrainedBpe } from "./src/train/bpe_trainer.ts";
export { type ChatRenderOptions } from "./src/tokenizer/chat_template.ts";
export { type ChoiceModelResult, type LengthUnit } from "./src/eval/zero_shot.ts";
export {
  type ChoiceParseOptions,
  type ParsedChoiceTasks,
  type TextChoiceQuestion,
  type TokenChoiceQuestion,
} from "./src/data/choice_tasks.ts";
export {
  type CompareQuantizeSettings,
  type CompareResult,
  type CompareRow,
} from "./src/eval/compare.ts";
export { type ConvertTarget } from "./src/formats/convert.ts";
export { type EdsgMode } from "./src/quantize/nearest.ts";
export { type FileFingerprint } from "./src/pipeline/file_hash.ts";
export { FisherAccumulator, type LinearStats } from "./src/calibrate/accumulator.ts";
export { type FisherKind, type SensitivityKind } from "./src/allocate/sensitivity.ts";
export { type FisherMetadata } from "./src/calibrate/fisher_file.ts";
export {
  type FisherMetric,
  type GpuUse,
  type LayerResult,
  type LayerStatistics,
} from "./src/quantize/types.ts";
export { type GgufWriteOptions } from "./src/formats/gguf_writer.ts";
export { type GpuRunOptions, type GpuRunResult } from "./src/model/gpu_backward.ts";
export { type HfWriteOptions } from "./src/formats/hf_writer.ts";
export { type LayerFisherStats } from "./src/allocate/fisher_source.ts";
export {
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  type RunRecord,
  type ToolVersions,
} from "./src/pipeline/manifest.ts";
export {
  PLAN_FORMAT,
  PLAN_VERSION,
  type PlanBytes,
  type PlanLayer,
  type PlanLayerLayout,
  type PlanScope,
} from "./src/allocate/plan.ts";
export { type PackedLayers } from "./src/model/model.ts";
export { type QuantizedLinearArgs } from "./src/ops/quantized_linear.ts";
export {
  type QuantizedModelData,
  type TokenizerText,
  type UniformLayerDesc,
  type VqGroupDesc,
  type VqLayerDesc,
} from "./src/formats/quantized_types.ts";
export { type RdSolverKind } from "./src/allocate/rate_distortion.ts";
export { type ReportPlan } from "./src/report/report.ts";
export { type ResolvedPipelineOptions } from "./src/pipeline/options.ts";
export { type ScopeChoice } from "./src/quantize/auto_scope.ts";
export { type ScopeGroup } from "./src/quantize/scope.ts";
export { ScoreBpeTokenizer } from "./src/tokenizer/score_bpe.ts";
export { type SharedCodebookInfo } from "./src/quantize/quantize_layers.ts";
export { type StopReason } from "./src/model/generate.ts";
export { type StorageBytes, type VqLayerStorage } from "./src/quantize/bpw.ts";
export { type TensorInfo, type TensorToWrite } from "./src/formats/safetensors.ts";
export { type TrainModelOptions, type TrainModelResult } from "./src/train/train_model.ts";
export { type TrainWeights } from "./src/model/gpu_backward_buffers.ts";
export { type WcsgPlan } from "./src/quantize/plan.ts";
export {
  type AverageAccuracy,
  type ChoiceQuestionScore,
  type TaskAccuracy,
} from "./src/eval/choice_metrics.ts";
export { type BlockWeights } from "./src/model/gpu_model_buffers.ts";
export { type CalibratedLinear } from "./src/calibrate/layers.ts";
export { ChoiceLineError, type QuestionBase } from "./src/data/choice_tasks.ts";
export { type DType } from "./src/formats/dtype.ts";
export { type GgufDtype } from "./src/formats/gguf_writer.ts";
export { type GgufEntry } from "./src/formats/gguf_types.ts";
export { type GpuLinearTap } from "./src/model/gpu_backward.ts";
export { type GpuMatrix } from "./src/ops/gpu_matrix.ts";
export { type HfDtype } from "./src/formats/hf_writer.ts";
export { type LinearTap } from "./src/model/reference_backward.ts";
export { type ModelShape } from "./src/train/train_model.ts";
export { type PackedTensorSource } from "./src/ops/quantized_tensors.ts";
export { type PlanGroup } from "./src/allocate/plan.ts";
export { type TrainOptions, type TrainResult } from "./src/train/trainer.ts";
export { type VqGroupStorage } from "./src/quantize/bpw.ts";
export { type VqStage } from "./src/formats/quantized_types.ts";
export { type WcsgPlanLayer } from "./src/quantize/plan.ts";
export { type ZeroShotSummary } from "./src/eval/compare.ts";
export type { GradientEngine as TrainGradientEngine } from "./src/train/gradient_engine.ts";
export { type BatchGradients } from "./src/train/gradient_engine.ts";
export { type BlockLinear } from "./src/model/reference_backward.ts";
export { type ChoiceLayout } from "./src/data/choice_tasks.ts";
export { type GgufTypeId, type GgufValue } from "./src/formats/gguf_types.ts";
export { type LinearWeight } from "./src/model/gpu_model_buffers.ts";
export { type RowChunk } from "./src/ops/gpu_matrix.ts";
export { type TrainHistory } from "./src/train/train_checkpoint.ts";
export type { BlockWeights as TrainBlockWeights } from "./src/model/gpu_backward_buffers.ts";
export { GgufType } from "./src/formats/gguf_types.ts";
