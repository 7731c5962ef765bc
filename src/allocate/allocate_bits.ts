/**
 * Weight Channel Sensitivity Guidance: turns per-channel Fisher sensitivities into a plan
 * of codebook sizes that meets a bits-per-weight budget with every stored byte counted.
 *
 * Rate-distortion model: a channel with sensitivity I_c coded at b bits per weight costs
 * D_c(b) = I_c * 2^(-2b). With continuous rates and no overhead the optimum is reverse
 * water-filling, b_c = b_mean + 1/2 log2(I_c / geomean(I)). Here rates are discrete
 * (log2(K) / v for codebook sizes K = 2^k) and shared by a group, and every byte of
 * indices, codebooks, scales and permutation counts, so the same objective is solved as
 * a multiple-choice knapsack over the exact byte costs (see rate_distortion.ts).
 *
 * Measured distortion (`distortion: "measured"`): after GPTQ-style error feedback the
 * quantizer's error falls faster with K than 2^(-2b), so the model over-rewards the layers
 * it rates as sensitive. Trial quantizations at a few sizes near the choice replace the
 * model there (refineWithTrials). NOTE: they need one group per layer, because the
 * quantizer reports errors per layer, not per group.
 *
 * TODO: the knapsack sums per-layer costs, but on the reference model the KL divergence is
 * far from additive across blocks (docs/benchmarks.md, "WCSG on the reference model").
 * Scoring a few whole candidate plans on calibration text would capture that.
 *
 * @module
 */
import { FormatError, ShapeError, UsageError } from "../errors.ts";
import { BLOCK_LINEARS } from "../model/config.ts";
import type { WeightStore } from "../model/model.ts";
import { Progress } from "../util/progress.ts";
import { CODEBOOK_SCOPES, type CodebookScope, groupLayersByScope } from "../quantize/scope.ts";
import {
  budgetBytes,
  buildGrouping,
  type GroupInfo,
  type LayerWork,
  minimumBytes,
  sharedGroup,
  solveGroups,
} from "./_layer_work.ts";
import type { FisherStatsSource } from "./fisher_source.ts";
import { chooseGroupCounts } from "./group_count.ts";
import {
  MAX_CODEBOOK_SIZE,
  type Plan,
  PLAN_FORMAT,
  PLAN_VERSION,
  type PlanLayer,
  type PlanScope,
  planScopeBitsPerWeight,
} from "./plan.ts";
import type { RdSolverKind } from "./rate_distortion.ts";
import { channelSensitivity, type FisherKind, type SensitivityKind } from "./sensitivity.ts";
import { DISTORTION_KINDS, type DistortionKind, isDistortionKind } from "../quantize/plan.ts";

export type { DistortionKind };

/**
 * A trial quantization: quantizes every layer with codebooks of `codebookSize` entries
 * (shared as the plan's codebook scope shares them) and returns each layer's
 * Fisher-weighted error in loss units, by layer prefix.
 */
export type TrialQuantization = (codebookSize: number) => Promise<Map<string, number>>;

/** Options of {@linkcode allocateBits}; every field but `bits` has a default. */
export interface AllocateOptions {
  /** Budget in bits per weight, overhead included. */
  bits: number;
  /** Channel groups (codebooks) per layer, or the most tried with `searchGroups`. Default 4. */
  groups?: number;
  /**
   * Try every group count from 1 to `groups` per layer and keep the one with the least
   * modelled loss under the budget (fewer codebooks where their storage costs more than
   * finer rates save). Default false.
   */
  searchGroups?: boolean;
  /** Vector length v along the input dimension. Default 4. */
  vectorLength?: number;
  /** Budget over every layer separately or over the whole model. Default "layer". */
  scope?: PlanScope;
  /**
   * Sharing scope of the group codebooks (src/quantize/scope.ts). Default "layer" (every
   * layer's groups own their codebooks). With a wider scope, the layers of a scope get
   * the same group count, and group rank g across them is one choice of codebook size
   * whose codebook counts once. A wider scope needs `scope` "model" and no `searchGroups`.
   */
  codebookScope?: CodebookScope;
  /**
   * Sensitivity formula. Default "trace". A plan that trades bits between layers uses one
   * form throughout, so "gradient" turns into "trace" everywhere as soon as one layer's
   * mean gradient is noise.
   */
  sensitivity?: SensitivityKind;
  /** Fisher diagonal. Default "kfac". */
  fisher?: FisherKind;
  /** For the gradient sensitivity: minimum signal-to-noise ratio of the mean gradient (see sensitivity.ts). Default 4. */
  minGradientSnr?: number;
  /** Smallest codebook size (a power of two, at least 2). Default 2. */
  minCodebookSize?: number;
  /** Largest codebook size (a power of two, at most 65536). Default 65536. */
  maxCodebookSize?: number;
  /** Linear-layer prefixes to allocate. Default: every block linear layer of the model. */
  layers?: string[];
  /** Solver for the discrete problem. Default "auto" (exact whenever its table fits). */
  solver?: "auto" | RdSolverKind;
  /**
   * Distortion of a codebook size: "model", the high-rate model sum(I_c) 2^(-2k/v), or
   * "measured", the Fisher-weighted error each layer has after a trial quantization with
   * that size (`trial`), at the sizes near the choice. Default "model". "measured" needs
   * `trial` and one group per layer.
   */
  distortion?: DistortionKind;
  /** Runs a trial quantization; required by `distortion: "measured"`. */
  trial?: TrialQuantization;
  /** Print no progress. Default false. */
  quiet?: boolean;
}

/**
 * Computes channel sensitivities from Fisher statistics and chooses every group's
 * codebook size so that the stored bits per weight never exceed `options.bits`.
 *
 * @example
 * ```ts ignore
 * const model = await loadModel("stories260K.bin");
 * const stats = await openFisherStats("fisher.safetensors");
 * const plan = await allocateBits(stats, model.weights, { bits: 3, scope: "model" });
 * ```
 * @param stats Fisher statistics per linear layer.
 * @param weights The model's weights (shapes and row variances).
 * @param options Budget and allocation settings.
 * @returns A validated plan.
 * @throws {UsageError} When an option is invalid or the budget cannot be met even with
 *   the smallest codebooks (the message gives the minimum achievable bits per weight).
 * @throws {FormatError} When statistics are missing or disagree with the weights.
 */
export async function allocateBits(
  stats: FisherStatsSource,
  weights: WeightStore,
  options: AllocateOptions,
): Promise<Plan> {
  const settings = resolveOptions(options);
  const names = options.layers ?? blockLinearLayers(weights);
  if (names.length === 0) {
    throw new FormatError(
      weights.source,
      "",
      "No linear layers to allocate: expected model.layers.N.*_proj.weight tensors",
    );
  }
  const available = new Set(stats.layers());
  const progress = new Progress("allocate", names.length, {
    quiet: settings.quiet,
    unit: "layers",
  });

  const work: LayerWork[] = [];
  for (const name of names) {
    if (!available.has(name)) {
      throw new FormatError(
        stats.source,
        name,
        "No statistics for this layer: calibrate the same model with deno task calibrate",
      );
    }
    work.push(await prepareLayer(stats, weights, name, settings));
    progress.advance(1, name);
  }
  progress.finish();

  // Gradient and trace sensitivities have different units, so a plan that trades bits
  // between layers must not mix them: one fallback turns every layer to trace.
  const crossLayer = settings.scope === "model" || settings.codebookScope !== "layer";
  if (crossLayer && new Set(work.map((w) => w.kind)).size > 1) {
    const trace: Settings = { ...settings, sensitivity: "trace" };
    for (let i = 0; i < work.length; i++) {
      work[i] = await prepareLayer(stats, weights, work[i].name, trace);
    }
  }

  const shared = settings.codebookScope !== "layer" ? sharedItems(work, settings) : null;
  const solve = () =>
    shared
      ? solveShared(work, shared, settings)
      : settings.scope === "model"
      ? solveModelWithSearch(work, settings)
      : solveLayersWithSearch(work, settings);
  let chosen = solve();
  if (options.trial && settings.distortion === "measured") {
    chosen = await refineWithTrials(work, shared, chosen, solve, options.trial, settings);
  }
  return buildPlan(work, chosen.k, chosen.solver, settings, stats.source, weights.source);
}

/** Rounds of trial quantizations and solving again. */
const TRIAL_ROUNDS = 3;

/**
 * Replaces modelled distortions by measured ones and solves again. The first round
 * measures the largest codebook size every group can take at once and the sizes on
 * either side. Later rounds measure the sizes the solution chose that are not measured
 * yet, until the choice rests on measurements only or TRIAL_ROUNDS rounds have run. Each
 * measurement is one trial quantization of every layer. Where no bits can move between
 * groups (a budget per layer, or a single group), it returns `first` without trials.
 *
 * Why: after GPTQ-style error feedback the error falls faster with the codebook size
 * than the high-rate model predicts: 1.8x to 2.7x per doubling at 1.5 to 2.3 bits on the
 * reference model, against 1.41x. So the model moves too many bits to the layers it rates
 * as sensitive (docs/benchmarks.md, "WCSG on the reference model").
 */
async function refineWithTrials(
  work: LayerWork[],
  shared: SharedItem[] | null,
  first: Chosen,
  solve: () => Chosen,
  trial: TrialQuantization,
  s: Settings,
): Promise<Chosen> {
  const groups = knapsackGroups(work, shared);
  // With a budget per layer and one group per layer, or one item in all, no bits can move
  // between groups, so a measurement could not change the plan.
  if (s.scope !== "model" || groups.length < 2) return first;
  const offered = new Set(groups.flatMap(({ group }) => group.options.map((o) => o.k)));
  const uniform = uniformExponent(groups, offered, work, s);
  let requested = new Set([uniform - 1, uniform, uniform + 1].filter((k) => offered.has(k)));
  let chosen = first;
  for (let round = 0; round < TRIAL_ROUNDS && requested.size > 0; round++) {
    for (const k of [...requested].sort((a, b) => a - b)) {
      if (!s.quiet) console.error(`allocate: trial quantization with K = ${2 ** k}`);
      const start = performance.now();
      const errors = await trial(2 ** k);
      if (!s.quiet) {
        let total = 0;
        for (const e of errors.values()) total += e;
        const seconds = (performance.now() - start) / 1000;
        console.error(
          `allocate: trial with K = ${2 ** k} done, Fisher error ${total.toExponential(3)} (${
            seconds.toFixed(1)
          } s)`,
        );
      }
      for (const { group, layers } of groups) {
        const option = group.options.find((o) => o.k === k);
        if (option) option.measured = layers.reduce((sum, n) => sum + layerError(errors, n), 0);
      }
    }
    for (const { group } of groups) extrapolate(group, s.vectorLength);
    chosen = solve();
    requested = new Set(
      chosenExponents(groups, shared, chosen)
        .filter(({ group, k }) => group.options.find((o) => o.k === k)?.measured === undefined)
        .map(({ k }) => k),
    );
  }
  return chosen;
}

function layerError(errors: Map<string, number>, name: string): number {
  const e = errors.get(name);
  if (e === undefined || !(e >= 0)) {
    throw new Error(`Internal error: the trial quantization reported no error for ${name}`);
  }
  return e;
}

/** Returns the largest offered exponent that every group can take at once within the budget. */
function uniformExponent(
  groups: KnapsackGroup[],
  offered: Set<number>,
  work: LayerWork[],
  s: Settings,
): number {
  const weights = work.reduce((sum, l) => sum + l.rows * l.cols, 0);
  const fixed = work.reduce((sum, l) => sum + l.grouping.fixedBytes, 0);
  const budget = budgetBytes(s.bits, weights) - fixed;
  const bytesAt = (g: GroupInfo, k: number) =>
    (g.options.find((o) => o.k === k) ?? g.options.at(-1)!).bytes;
  let best = Math.min(...offered);
  for (const k of [...offered].sort((a, b) => a - b)) {
    if (groups.reduce((sum, { group }) => sum + bytesAt(group, k), 0) <= budget) best = k;
  }
  return best;
}

type Settings = Required<Omit<AllocateOptions, "layers" | "trial">>;

function resolveOptions(o: AllocateOptions): Settings {
  const s: Settings = {
    bits: o.bits,
    groups: o.groups ?? 4,
    searchGroups: o.searchGroups ?? false,
    vectorLength: o.vectorLength ?? 4,
    scope: o.scope ?? "layer",
    codebookScope: o.codebookScope ?? "layer",
    sensitivity: o.sensitivity ?? "trace",
    fisher: o.fisher ?? "kfac",
    minGradientSnr: o.minGradientSnr ?? 4,
    minCodebookSize: o.minCodebookSize ?? 2,
    maxCodebookSize: o.maxCodebookSize ?? MAX_CODEBOOK_SIZE,
    solver: o.solver ?? "auto",
    distortion: o.distortion ?? "model",
    quiet: o.quiet ?? false,
  };
  if (!isDistortionKind(s.distortion)) {
    throw new UsageError(
      `Invalid distortion: expected one of ${DISTORTION_KINDS.join(", ")}, got ${
        JSON.stringify(s.distortion)
      }`,
    );
  }
  if (s.distortion === "measured" && (s.searchGroups || s.groups !== 1)) {
    throw new UsageError(
      "--distortion measured measures whole layers, so it needs one group per layer: pass --groups 1 without --search-groups",
    );
  }
  if (s.distortion === "measured" && !o.trial) {
    throw new UsageError('distortion "measured" needs a trial quantization: pass the trial option');
  }
  if (!(s.bits > 0) || !Number.isFinite(s.bits)) {
    throw new UsageError(`Invalid bits: expected a positive number, got ${s.bits}`);
  }
  if (!Number.isSafeInteger(s.groups) || s.groups < 1) {
    throw new UsageError(`Invalid groups: expected a positive integer, got ${s.groups}`);
  }
  if (!Number.isSafeInteger(s.vectorLength) || s.vectorLength < 1) {
    throw new UsageError(
      `Invalid vectorLength: expected a positive integer, got ${s.vectorLength}`,
    );
  }
  if (s.scope !== "layer" && s.scope !== "model") {
    throw new UsageError(
      `Invalid scope: expected "layer" or "model", got ${JSON.stringify(s.scope)}`,
    );
  }
  if (!CODEBOOK_SCOPES.includes(s.codebookScope)) {
    throw new UsageError(
      `Invalid codebookScope: expected one of ${CODEBOOK_SCOPES.join(", ")}, got ${
        JSON.stringify(s.codebookScope)
      }`,
    );
  }
  if (s.codebookScope !== "layer" && s.scope === "layer") {
    throw new UsageError(
      `--scope layer cannot hold for every layer when codebooks are shared by ${s.codebookScope}: a shared codebook's bytes belong to no single layer. Use --scope model with --codebook-scope ${s.codebookScope}`,
    );
  }
  if (s.codebookScope !== "layer" && s.searchGroups) {
    throw new UsageError(
      `--search-groups is not supported with --codebook-scope ${s.codebookScope}: the layers of a scope need one group count; pass --groups instead`,
    );
  }
  if (s.sensitivity !== "trace" && s.sensitivity !== "gradient") {
    throw new UsageError(
      `Invalid sensitivity: expected "trace" or "gradient", got ${JSON.stringify(s.sensitivity)}`,
    );
  }
  if (s.fisher !== "kfac" && s.fisher !== "empirical") {
    throw new UsageError(
      `Invalid fisher: expected "kfac" or "empirical", got ${JSON.stringify(s.fisher)}`,
    );
  }
  for (const key of ["minCodebookSize", "maxCodebookSize"] as const) {
    const k = s[key];
    if (!Number.isSafeInteger(k) || k < 2 || k > MAX_CODEBOOK_SIZE || (k & (k - 1)) !== 0) {
      throw new UsageError(
        `Invalid ${key}: expected a power of two in 2..${MAX_CODEBOOK_SIZE}, got ${k}`,
      );
    }
  }
  if (s.minCodebookSize > s.maxCodebookSize) {
    throw new UsageError(
      `minCodebookSize ${s.minCodebookSize} exceeds maxCodebookSize ${s.maxCodebookSize}`,
    );
  }
  return s;
}

/**
 * Lists the block linear layers of a model by their prefixes, in block then forward order.
 *
 * @param weights The model's weights.
 */
export function blockLinearLayers(weights: WeightStore): string[] {
  const pattern = /^model\.layers\.(\d+)\.([a-z_]+\.[a-z_]+)\.weight$/;
  const found: { name: string; block: number; slot: number }[] = [];
  for (const tensor of weights.names()) {
    const match = pattern.exec(tensor);
    const slot = match ? (BLOCK_LINEARS as readonly string[]).indexOf(match[2]) : -1;
    if (match && slot >= 0) {
      found.push({ name: tensor.slice(0, -".weight".length), block: Number(match[1]), slot });
    }
  }
  found.sort((a, b) => a.block - b.block || a.slot - b.slot);
  return found.map((f) => f.name);
}

async function prepareLayer(
  stats: FisherStatsSource,
  weights: WeightStore,
  name: string,
  s: Settings,
): Promise<LayerWork> {
  const layerStats = await stats.read(name);
  const shape = weights.shape(`${name}.weight`);
  if (shape.length !== 2 || shape[0] !== layerStats.rows || shape[1] !== layerStats.cols) {
    throw new ShapeError(
      `${name}: the weight in ${weights.source} is [${shape}] but the statistics in ${stats.source} describe [${layerStats.rows}, ${layerStats.cols}]: calibrate the same model`,
    );
  }
  const [rows, cols] = shape;
  const weight = await weights.read(`${name}.weight`);
  const { values, kind } = channelSensitivity(layerStats, weight, {
    kind: s.sensitivity,
    fisher: s.fisher,
    minGradientSnr: s.minGradientSnr,
  });
  const counts = s.searchGroups ? Array.from({ length: s.groups }, (_, i) => i + 1) : [s.groups];
  // Layers sharing codebooks by group rank need equal group counts, so ties may not merge groups.
  const mergeTies = s.codebookScope === "layer";
  const candidates = dedupe(
    counts.map((count) => buildGrouping(values, cols, count, s, mergeTies)),
  );
  const grouping = candidates.at(-1)!;
  return { name, rows, cols, sensitivity: values, kind, candidates, grouping };
}

/** Drops groupings whose boundaries repeat an earlier one's (ties can merge groups). */
function dedupe(groupings: LayerWork["candidates"]): LayerWork["candidates"] {
  const seen = new Set<string>();
  return groupings.filter((g) => {
    const key = g.groups.map((x) => x.end).join(",");
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

interface Chosen {
  /** Codebook exponent per group, indexed like `work[layer].grouping.groups`. */
  k: number[][];
  /** Modelled loss of the choice. */
  distortion: number;
  solver: string;
}

function solveLayersWithSearch(work: LayerWork[], s: Settings): Chosen {
  chooseGroupCounts(work, s);
  return solveLayers(work, s);
}

/**
 * Solves the model-wide problem with the searched group counts and also with the most
 * groups everywhere, and keeps the better of the two, because the Lagrangian search of
 * group counts is a heuristic.
 */
function solveModelWithSearch(work: LayerWork[], s: Settings): Chosen {
  if (!s.searchGroups) return solveModel(work, s);
  for (const layer of work) layer.grouping = layer.candidates.at(-1)!;
  const weights = work.reduce((sum, l) => sum + l.rows * l.cols, 0);
  const minimum = work.reduce((sum, l) => sum + minimumBytes(l), 0);
  const most = minimum <= budgetBytes(s.bits, weights) ? solveModel(work, s) : null;
  const mostGroupings = work.map((l) => l.grouping);
  chooseGroupCounts(work, s);
  const searched = solveModel(work, s);
  if (most && most.distortion < searched.distortion) {
    work.forEach((layer, i) => (layer.grouping = mostGroupings[i]));
    return most;
  }
  return searched;
}

function solveLayers(work: LayerWork[], s: Settings): Chosen {
  const worst = work
    .map((l) => ({ name: l.name, bpw: (minimumBytes(l) * 8) / (l.rows * l.cols) }))
    .reduce((a, b) => (b.bpw > a.bpw ? b : a));
  if (worst.bpw > s.bits) {
    throw infeasible(s, `layer ${worst.name} needs at least ${worst.bpw.toFixed(4)}`, worst.bpw);
  }
  const solvers = new Set<string>();
  let distortion = 0;
  const k = work.map((layer) => {
    const budget = budgetBytes(s.bits, layer.rows * layer.cols) - layer.grouping.fixedBytes;
    const result = solveGroups(layer.grouping.groups, budget, s);
    solvers.add(result.solver);
    distortion += result.distortion;
    return layer.grouping.groups.map((g) => result.k.get(g)!);
  });
  return { k, distortion, solver: solvers.size === 1 ? [...solvers][0] : "mixed" };
}

function solveModel(work: LayerWork[], s: Settings): Chosen {
  const weights = work.reduce((sum, l) => sum + l.rows * l.cols, 0);
  const fixed = work.reduce((sum, l) => sum + l.grouping.fixedBytes, 0);
  const minimum = work.reduce((sum, l) => sum + minimumBytes(l), 0);
  const minBpw = (minimum * 8) / weights;
  if (minBpw > s.bits) throw infeasible(s, `the model needs at least ${minBpw.toFixed(4)}`, minBpw);
  const result = solveGroups(
    work.flatMap((l) => l.grouping.groups),
    budgetBytes(s.bits, weights) - fixed,
    s,
  );
  return {
    k: work.map((l) => l.grouping.groups.map((g) => result.k.get(g)!)),
    distortion: result.distortion,
    solver: result.solver,
  };
}

/**
 * Sets the distortion of each unmeasured option of a group from the nearest measured
 * option, along the high-rate slope 2^(-2 dk / v). A group without any measurement keeps
 * the model.
 */
function extrapolate(group: GroupInfo, v: number): void {
  const measured = group.options.filter((o) => o.measured !== undefined);
  if (measured.length === 0) return;
  for (const o of group.options) {
    if (o.measured !== undefined) {
      o.distortion = o.measured;
      continue;
    }
    const near = measured.reduce((a, b) => Math.abs(b.k - o.k) < Math.abs(a.k - o.k) ? b : a);
    o.distortion = near.measured! * 2 ** ((-2 * (o.k - near.k)) / v);
  }
}

/** A knapsack group and the layers whose errors it sums (one group per layer). */
interface KnapsackGroup {
  group: GroupInfo;
  layers: string[];
}

/** Lists the groups of the knapsack with the layers they cover. */
function knapsackGroups(work: LayerWork[], shared: SharedItem[] | null): KnapsackGroup[] {
  if (shared) {
    return shared.map((it) => ({
      group: it.group,
      layers: it.members.map((m) => work[m.layer].name),
    }));
  }
  return work.map((w) => ({ group: w.grouping.groups[0], layers: [w.name] }));
}

/** Returns the exponent the solution gave each knapsack group. */
function chosenExponents(
  groups: KnapsackGroup[],
  shared: SharedItem[] | null,
  chosen: Chosen,
): { group: GroupInfo; k: number }[] {
  return groups.map(({ group }, i) => {
    const at = shared ? shared[i].members[0] : { layer: i, rank: 0 };
    return { group, k: chosen.k[at.layer][at.rank] };
  });
}

/** Group rank g of every layer in a codebook scope, merged into one knapsack group. */
interface SharedItem {
  group: GroupInfo;
  members: { layer: number; rank: number }[];
}

/**
 * Builds the knapsack items of codebooks shared by scope. Group rank g of every layer in
 * a scope is one item, with its codebook counted once and its indices summed over the
 * scope's layers.
 */
function sharedItems(work: LayerWork[], s: Settings): SharedItem[] {
  const byName = new Map(work.map((l, i) => [l.name, i]));
  const items: SharedItem[] = [];
  for (const scope of groupLayersByScope(work.map((l) => l.name), s.codebookScope)) {
    const layers = scope.prefixes.map((p) => byName.get(p)!);
    const count = Math.min(...layers.map((i) => work[i].grouping.groups.length));
    // Scopes whose layers differ in rows may split them into different group counts
    // (rows < groups); regroup them all to the smallest count.
    for (const i of layers) {
      if (work[i].grouping.groups.length !== count) {
        work[i].grouping = buildGrouping(work[i].sensitivity, work[i].cols, count, s, false);
      }
    }
    for (let rank = 0; rank < count; rank++) {
      const members = layers.map((i) => ({
        group: work[i].grouping.groups[rank],
        cols: work[i].cols,
      }));
      items.push({
        group: sharedGroup(members, s),
        members: layers.map((layer) => ({ layer, rank })),
      });
    }
  }
  return items;
}

/**
 * Solves the model-wide problem with codebooks shared by scope: every layer of a scope
 * takes its item's codebook size.
 */
function solveShared(work: LayerWork[], items: SharedItem[], s: Settings): Chosen {
  const weights = work.reduce((sum, l) => sum + l.rows * l.cols, 0);
  const fixed = work.reduce((sum, l) => sum + l.grouping.fixedBytes, 0);
  const minimum = fixed + items.reduce((sum, it) => sum + it.group.options[0].bytes, 0);
  const minBpw = (minimum * 8) / weights;
  if (minBpw > s.bits) throw infeasible(s, `the model needs at least ${minBpw.toFixed(4)}`, minBpw);
  const result = solveGroups(items.map((it) => it.group), budgetBytes(s.bits, weights) - fixed, s);
  const k = work.map((l) => l.grouping.groups.map(() => 0));
  for (const it of items) for (const m of it.members) k[m.layer][m.rank] = result.k.get(it.group)!;
  return { k, distortion: result.distortion, solver: result.solver };
}

function infeasible(s: Settings, what: string, minBpw: number): UsageError {
  return new UsageError(
    `Budget of ${s.bits} bits per weight cannot be met: ${what} bits per weight with the smallest codebooks ` +
      `(K = ${s.minCodebookSize}, ${
        s.searchGroups ? "1 to " : ""
      }${s.groups} groups, vector length ${s.vectorLength}, scales and permutations included). ` +
      `Raise --bits to at least ${
        Math.ceil(minBpw * 1e4) / 1e4
      }, or use fewer --groups or a longer --vector-length`,
  );
}

function buildPlan(
  work: LayerWork[],
  k: number[][],
  solver: string,
  s: Settings,
  statsSource: string,
  modelSource: string,
): Plan {
  const layouts = Object.fromEntries(work.map((w, i) => [w.name, {
    rows: w.rows,
    cols: w.cols,
    vectorLength: s.vectorLength,
    groups: w.grouping.groups.map((g, j) => ({
      start: g.start,
      end: g.end,
      codebookSize: 2 ** k[i][j],
    })),
    channelOrder: w.grouping.order,
  }]));
  const { bpw, layers: layerBpw } = planScopeBitsPerWeight(layouts, s.codebookScope);
  const layers: Record<string, PlanLayer> = {};
  for (const w of work) {
    layers[w.name] = {
      ...layouts[w.name],
      sensitivity: Array.from(w.sensitivity, (x) => Number(x.toPrecision(6))),
      bpw: layerBpw[w.name],
      sensitivityKind: w.kind,
    };
  }
  // The budgets above make this impossible; a failure here is a bug, not a user error.
  if (bpw > s.bits) {
    throw new Error(
      `Internal error: the plan spends ${bpw} bits per weight, over the budget of ${s.bits}`,
    );
  }
  return {
    format: PLAN_FORMAT,
    version: PLAN_VERSION,
    bits: s.bits,
    scope: s.scope,
    vectorLength: s.vectorLength,
    bpw,
    codebookScope: s.codebookScope,
    groups: s.groups,
    searchGroups: s.searchGroups,
    sensitivity: s.sensitivity,
    fisher: s.fisher,
    solver,
    distortion: s.distortion,
    sources: { model: modelSource, fisher: statsSource },
    layers,
  };
}
