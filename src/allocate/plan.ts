/**
 * The allocation plan: per linear layer, the channel order, the channel groups and each
 * group's codebook size, which the quantizer follows exactly. docs/plan.md describes the
 * JSON format, and this file contains its types, its byte accounting and its validation.
 *
 * Bits per weight are always recomputed from the layout with `vqLayerBytes` (per row an
 * f16 scale, per group an f16 codebook [K, v] and packed indices, and, when several groups
 * reorder the rows, a permutation of ceil(log2 rows) bits per row), so a plan's bpw equals
 * the quantized file's. With a codebook scope wider than one layer (`codebookScope`), group
 * rank g of every layer in a scope shares one codebook, counted once for the scope and
 * left out of each layer's own bytes, as the quantizer stores it.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import {
  bitsPerWeight,
  codebookBytes,
  type StorageBytes,
  storesChannelOrder,
  vqLayerBytes,
  type VqLayerStorage,
} from "../quantize/bpw.ts";
import { CODEBOOK_SCOPES, type CodebookScope, groupLayersByScope } from "../quantize/scope.ts";
import { DISTORTION_KINDS, type DistortionKind, isDistortionKind } from "../quantize/plan.ts";
import type { FisherKind, SensitivityKind } from "./sensitivity.ts";

/** Value of the plan's `format` field. */
export const PLAN_FORMAT = "rsavq-plan";
/** Plan format version this code reads and writes. */
export const PLAN_VERSION = 2;
/** Largest codebook a plan may ask for (16-bit indices). */
export const MAX_CODEBOOK_SIZE = 65536;

/** Budget scope: one budget for the whole model, or one per layer. */
export type PlanScope = "layer" | "model";

/** One group of channels sharing a codebook: channelOrder[start..end). */
export interface PlanGroup {
  /** First position in `channelOrder` (inclusive). */
  start: number;
  /** Last position in `channelOrder` (exclusive). */
  end: number;
  /** Codebook entries K, a power of two in [2, 65536]; the index rate is log2(K) / v bits per weight. */
  codebookSize: number;
}

/** Allocation of one linear layer. */
export interface PlanLayer {
  /** Output channels m. */
  rows: number;
  /** Input columns n. */
  cols: number;
  /** Vector length v along the input dimension. */
  vectorLength: number;
  /** Channels by decreasing sensitivity: a permutation of 0..m-1. */
  channelOrder: number[];
  /** Sensitivity I_c per channel in original order, [m] (6 significant digits). */
  sensitivity: number[];
  /** Groups partitioning `channelOrder`, in order. */
  groups: PlanGroup[];
  /**
   * Bits per weight of this layer as stored, overhead included. A codebook shared by a
   * scope counts here in proportion to the layer's share of the scope's weights.
   */
  bpw: number;
  /** Formula that produced `sensitivity` (a gradient request may have fallen back to trace). */
  sensitivityKind?: SensitivityKind;
}

/** A complete allocation plan. */
export interface Plan {
  /** Format tag, always "rsavq-plan". */
  format: typeof PLAN_FORMAT;
  /** Plan format version, currently 2. */
  version: typeof PLAN_VERSION;
  /** Requested budget in bits per weight. */
  bits: number;
  /** Whether the budget applies per layer or over the whole model. */
  scope: PlanScope;
  /** Vector length every layer uses. */
  vectorLength: number;
  /** Achieved bits per weight over all layers, overhead included (shared codebooks once). */
  bpw: number;
  /**
   * Extent of group codebook sharing (src/quantize/scope.ts): group rank g of every layer
   * in a scope uses one codebook. Absent means "layer" (no sharing).
   */
  codebookScope?: CodebookScope;
  /** Allocation per linear-layer prefix (for example "model.layers.0.self_attn.q_proj"). */
  layers: Record<string, PlanLayer>;
  /** Requested number of groups per layer (a layer may use fewer when sensitivities tie). */
  groups?: number;
  /** Whether each layer's group count was searched from 1 to `groups`. */
  searchGroups?: boolean;
  /** Requested sensitivity formula. */
  sensitivity?: SensitivityKind;
  /** Fisher diagonal used. */
  fisher?: FisherKind;
  /** Solver that chose the codebook sizes ("exact", "greedy", or "mixed" across layers). */
  solver?: string;
  /** Distortion of a codebook size: "model" (high-rate model) or "measured" (trial quantizations). */
  distortion?: DistortionKind;
  /** Model and statistics the plan was computed from. */
  sources?: { model?: string; fisher?: string };
}

/** The fields of a plan layer that decide its stored bytes. */
export type PlanLayerLayout = Pick<
  PlanLayer,
  "rows" | "cols" | "vectorLength" | "groups" | "channelOrder"
>;

/**
 * Describes a plan layer's storage for `vqLayerBytes`: a scale per row, one codebook per
 * group, and a packed permutation exactly when the quantizer stores one
 * (`storesChannelOrder`: several groups and an order that is not the identity).
 *
 * @param layer Plan layer.
 * @param sharesCodebooks Whether the group codebooks are shared by a scope and stored
 *   outside the layer (ownsCodebook false). Default false.
 */
export function planLayerStorage(layer: PlanLayerLayout, sharesCodebooks = false): VqLayerStorage {
  return {
    rows: layer.rows,
    cols: layer.cols,
    vectorLength: layer.vectorLength,
    groups: layer.groups.map((g) => ({
      rows: g.end - g.start,
      codebookSize: g.codebookSize,
      ownsCodebook: !sharesCodebooks,
    })),
    scales: true,
    permutation: storesChannelOrder(layer.channelOrder, layer.groups.length),
  };
}

/**
 * Stored bytes of a plan layer, by component.
 *
 * @param layer Plan layer.
 * @param sharesCodebooks Leave the group codebooks out (shared by a scope). Default false.
 */
export function planLayerBytes(layer: PlanLayerLayout, sharesCodebooks = false): StorageBytes {
  return vqLayerBytes(planLayerStorage(layer, sharesCodebooks));
}

/** Bytes of a plan with its codebook scope: each layer's own, and the shared codebooks once. */
export interface PlanBytes {
  /** Per layer: own bytes (codebooks left out when shared) and its share of the scope's codebooks. */
  layers: Record<string, { own: StorageBytes; sharedShare: number; weights: number }>;
  /** Shared codebooks per scope key, each counted once (empty for the layer scope). */
  shared: { key: string; prefixes: string[]; bytes: number }[];
  /** Bytes of every shared codebook. */
  sharedBytes: number;
  /** Own bytes of every layer plus `sharedBytes`. */
  total: number;
  /** Weights of every layer. */
  weights: number;
}

/**
 * Stored bytes of plan layers under a codebook scope. Group rank g of the layers in one
 * scope shares a codebook of the first layer's size at that rank (validatePlan checks that
 * the scope's layers agree), counted once. A layer's share of its scope's codebooks is
 * their bytes times the layer's weights over the scope's weights, so the shares add up to
 * the shared bytes.
 *
 * @param layers Plan layers by prefix, in forward order.
 * @param scope Codebook scope. Default "layer" (every layer owns its codebooks).
 */
export function planBytes(
  layers: Record<string, PlanLayerLayout>,
  scope: CodebookScope = "layer",
): PlanBytes {
  const out: PlanBytes = { layers: {}, shared: [], sharedBytes: 0, total: 0, weights: 0 };
  const shares = scope !== "layer";
  for (const group of groupLayersByScope(Object.keys(layers), scope)) {
    const first = layers[group.prefixes[0]];
    const bytes = shares
      ? first.groups.reduce((n, g) => n + codebookBytes(g.codebookSize, first.vectorLength), 0)
      : 0;
    const weights = group.prefixes.reduce((n, p) => n + layers[p].rows * layers[p].cols, 0);
    if (shares) {
      out.shared.push({ key: group.key, prefixes: group.prefixes, bytes });
      out.sharedBytes += bytes;
    }
    for (const prefix of group.prefixes) {
      const layer = layers[prefix];
      const own = planLayerBytes(layer, shares);
      const w = layer.rows * layer.cols;
      out.layers[prefix] = { own, sharedShare: (bytes * w) / weights, weights: w };
      out.total += own.total;
      out.weights += w;
    }
  }
  out.total += out.sharedBytes;
  return out;
}

/**
 * Bits per weight of one plan layer and of all of them under a codebook scope.
 *
 * @param layers Plan layers by prefix.
 * @param scope Codebook scope. Default "layer".
 */
export function planScopeBitsPerWeight(
  layers: Record<string, PlanLayerLayout>,
  scope: CodebookScope = "layer",
): { bpw: number; layers: Record<string, number> } {
  const b = planBytes(layers, scope);
  const perLayer: Record<string, number> = {};
  for (const [name, l] of Object.entries(b.layers)) {
    perLayer[name] = ((l.own.total + l.sharedShare) * 8) / l.weights;
  }
  return { bpw: (b.total * 8) / b.weights, layers: perLayer };
}

/**
 * Bits per weight of the given plan layers together, recomputed from their layout.
 *
 * @example
 * ```ts
 * import { planBitsPerWeight } from "./plan.ts";
 * // 64 rows x 64 cols, v = 4, K = 256 in one group: 2 bits of indices, 0.25 of scales,
 * // 2 * 256 * 4 * 8 / 4096 = 4 of codebook, and no permutation (one group).
 * const channelOrder = Array.from({ length: 64 }, (_, i) => 63 - i);
 * const layer = { rows: 64, cols: 64, vectorLength: 4, channelOrder, groups: [{ start: 0, end: 64, codebookSize: 256 }] };
 * if (planBitsPerWeight([layer]) !== 6.25) throw new Error();
 * ```
 * @param layers Plan layers.
 */
export function planBitsPerWeight(layers: PlanLayerLayout[]): number {
  return bitsPerWeight(layers.map((l) => ({ bytes: planLayerBytes(l), weights: l.rows * l.cols })));
}

/** Relative tolerance when comparing a stored bpw with the recomputed one (JSON round trip). */
const BPW_TOLERANCE = 1e-9;

/**
 * Checks that `value` is a well-formed plan and returns it typed. Bits per weight are
 * recomputed from the layout and must match what the plan states and stay within `bits`.
 *
 * @param value Parsed JSON.
 * @param file File the plan came from, for error messages.
 * @throws {FormatError} Naming the file and the first bad field.
 */
export function validatePlan(value: unknown, file: string): Plan {
  const fail = (field: string, detail: string): never => {
    throw new FormatError(file, field, detail);
  };
  if (!isRecord(value)) return fail("", "Expected a JSON object");
  if (value.format !== PLAN_FORMAT) {
    fail(
      "format",
      `Expected "${PLAN_FORMAT}", got ${
        JSON.stringify(value.format)
      }: pass a plan written by deno task allocate`,
    );
  }
  if (value.version !== PLAN_VERSION) {
    fail(
      "version",
      `Expected ${PLAN_VERSION}, got ${
        JSON.stringify(value.version)
      }: rerun deno task allocate with this version of the toolkit`,
    );
  }
  const bits = positiveNumber(value.bits, "bits", fail);
  if (value.scope !== "layer" && value.scope !== "model") {
    fail("scope", `Expected "layer" or "model", got ${JSON.stringify(value.scope)}`);
  }
  positiveInteger(value.vectorLength, "vectorLength", fail);
  const bpw = positiveNumber(value.bpw, "bpw", fail);
  if (!isRecord(value.layers)) {
    return fail("layers", "Expected an object mapping layer names to allocations");
  }
  const names = Object.keys(value.layers);
  if (names.length === 0) fail("layers", "Expected at least one layer");

  const codebookScope = value.codebookScope ?? "layer";
  if (!(CODEBOOK_SCOPES as readonly unknown[]).includes(codebookScope)) {
    fail(
      "codebookScope",
      `Expected one of ${CODEBOOK_SCOPES.join(", ")}, got ${JSON.stringify(value.codebookScope)}`,
    );
  }
  const scope = codebookScope as CodebookScope;
  if (scope !== "layer" && value.scope === "layer") {
    fail(
      "scope",
      `A budget per layer cannot hold when codebooks are shared across layers (codebookScope ${scope}): use scope "model"`,
    );
  }

  if (value.distortion !== undefined && !isDistortionKind(value.distortion)) {
    fail(
      "distortion",
      `Expected one of ${DISTORTION_KINDS.join(", ")}, got ${JSON.stringify(value.distortion)}`,
    );
  }

  const layers: Record<string, PlanLayer> = {};
  for (const name of names) {
    layers[name] = validateLayer(value.layers[name], `layers.${name}`, fail);
  }
  if (scope !== "layer") checkScopeAgreement(layers, scope, fail);
  const actual = planScopeBitsPerWeight(layers, scope);
  for (const name of names) {
    const stated = layers[name].bpw;
    if (!near(actual.layers[name], stated)) {
      fail(
        `layers.${name}.bpw`,
        `States ${stated} but the layout stores ${
          actual.layers[name]
        } bits per weight: rerun deno task allocate instead of editing the plan`,
      );
    }
    if (value.scope === "layer" && stated > bits * (1 + BPW_TOLERANCE)) {
      fail(`layers.${name}.bpw`, `${stated} exceeds the budget of ${bits} bits per weight`);
    }
  }
  if (!near(actual.bpw, bpw)) {
    fail(
      "bpw",
      `States ${bpw} but the layers store ${actual.bpw} bits per weight: rerun deno task allocate instead of editing the plan`,
    );
  }
  if (bpw > bits * (1 + BPW_TOLERANCE)) {
    fail("bpw", `${bpw} exceeds the budget of ${bits} bits per weight`);
  }
  return value as unknown as Plan;
}

function validateLayer(
  value: unknown,
  at: string,
  fail: (field: string, detail: string) => never,
): PlanLayer {
  if (!isRecord(value)) return fail(at, "Expected an object");
  const rows = positiveInteger(value.rows, `${at}.rows`, fail);
  positiveInteger(value.cols, `${at}.cols`, fail);
  positiveInteger(value.vectorLength, `${at}.vectorLength`, fail);

  const order = value.channelOrder;
  if (!Array.isArray(order) || order.length !== rows) {
    fail(`${at}.channelOrder`, `Expected an array of ${rows} channel indices`);
  }
  const seen = new Uint8Array(rows);
  (order as unknown[]).forEach((c, i) => {
    if (!Number.isInteger(c) || (c as number) < 0 || (c as number) >= rows || seen[c as number]) {
      fail(
        `${at}.channelOrder[${i}]`,
        `Expected a permutation of 0..${rows - 1}, got ${JSON.stringify(c)}`,
      );
    }
    seen[c as number] = 1;
  });

  const sens = value.sensitivity;
  if (!Array.isArray(sens) || sens.length !== rows) {
    fail(`${at}.sensitivity`, `Expected an array of ${rows} numbers`);
  }
  (sens as unknown[]).forEach((s, i) => {
    if (typeof s !== "number" || !Number.isFinite(s) || s < 0) {
      fail(
        `${at}.sensitivity[${i}]`,
        `Expected a finite non-negative number, got ${JSON.stringify(s)}`,
      );
    }
  });

  const groups = value.groups;
  if (!Array.isArray(groups) || groups.length === 0) {
    return fail(`${at}.groups`, "Expected a non-empty array of groups");
  }
  let next = 0;
  groups.forEach((g: unknown, i: number) => {
    const gAt = `${at}.groups[${i}]`;
    if (!isRecord(g)) fail(gAt, "Expected an object with start, end and codebookSize");
    const group = g as Record<string, unknown>;
    if (group.start !== next) {
      fail(
        `${gAt}.start`,
        `Expected ${next} so the groups partition the channel order, got ${
          JSON.stringify(group.start)
        }`,
      );
    }
    const end = positiveInteger(group.end, `${gAt}.end`, fail);
    if (end <= next || end > rows) {
      fail(`${gAt}.end`, `Expected a value in ${next + 1}..${rows}, got ${end}`);
    }
    const k = positiveInteger(group.codebookSize, `${gAt}.codebookSize`, fail);
    if (k < 2 || k > MAX_CODEBOOK_SIZE || (k & (k - 1)) !== 0) {
      fail(`${gAt}.codebookSize`, `Expected a power of two in 2..${MAX_CODEBOOK_SIZE}, got ${k}`);
    }
    next = end;
  });
  if (next !== rows) {
    fail(
      `${at}.groups`,
      `Groups end at channel ${next} but the layer has ${rows}: the last group must end at ${rows}`,
    );
  }

  positiveNumber(value.bpw, `${at}.bpw`, fail);
  const layer = value as unknown as PlanLayer;
  if (
    value.sensitivityKind !== undefined && value.sensitivityKind !== "trace" &&
    value.sensitivityKind !== "gradient"
  ) {
    fail(
      `${at}.sensitivityKind`,
      `Expected "trace" or "gradient", got ${JSON.stringify(value.sensitivityKind)}`,
    );
  }
  return layer;
}

/**
 * Checks that the layers of every codebook scope can share codebooks by group rank: the
 * same vector length, group count and codebook size at each rank.
 */
function checkScopeAgreement(
  layers: Record<string, PlanLayer>,
  scope: CodebookScope,
  fail: (field: string, detail: string) => never,
): void {
  const signature = (l: PlanLayer) =>
    `vector length ${l.vectorLength}, codebook sizes [${
      l.groups.map((g) => g.codebookSize).join(", ")
    }]`;
  for (const group of groupLayersByScope(Object.keys(layers), scope)) {
    const first = signature(layers[group.prefixes[0]]);
    for (const prefix of group.prefixes.slice(1)) {
      if (signature(layers[prefix]) !== first) {
        fail(
          `layers.${prefix}.groups`,
          `Layers of codebook scope ${group.key} share codebooks by group rank, but ${
            group.prefixes[0]
          } has ${first} and this layer ${signature(layers[prefix])}: rerun deno task allocate`,
        );
      }
    }
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function positiveNumber(
  value: unknown,
  field: string,
  fail: (field: string, detail: string) => never,
): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    fail(field, `Expected a positive number, got ${JSON.stringify(value)}`);
  }
  return value as number;
}

function positiveInteger(
  value: unknown,
  field: string,
  fail: (field: string, detail: string) => never,
): number {
  if (!Number.isSafeInteger(value) || (value as number) <= 0) {
    fail(field, `Expected a positive integer, got ${JSON.stringify(value)}`);
  }
  return value as number;
}

function near(a: number, b: number): boolean {
  return Math.abs(a - b) <= BPW_TOLERANCE * Math.max(1, Math.abs(b));
}
