/**
 * WCSG plans (src/allocate writes them, `deno task quantize --plan` follows them): per
 * linear layer a channel order and groups over it, each with its own codebook size.
 *
 * ```json
 * {"format": "rsavq-plan", "version": 2, "layers": {"model.layers.0.self_attn.q_proj":
 *   {"rows": 64, "cols": 64, "vectorLength": 4, "channelOrder": [5, 0, ...],
 *    "groups": [{"start": 0, "end": 16, "codebookSize": 256}, ...]}}}
 * ```
 * Group g contains rows channelOrder[start..end); the groups partition the order. A layer
 * with one group is quantized in natural row order and stores no permutation. A plan's
 * `codebookScope` (absent: "layer") is the scope its bytes were counted for; quantize
 * follows it ({@linkcode planCodebookScope}).
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { VqGroupSpec } from "./types.ts";
import { MAX_CODEBOOK_SIZE } from "./budget.ts";
import { storesChannelOrder } from "./bpw.ts";
import { UsageError } from "../errors.ts";
import { CODEBOOK_SCOPES, type CodebookScope } from "./scope.ts";

/**
 * Source of a codebook size's distortion in a WCSG plan: "model" (the high-rate model) or
 * "measured" (trial quantizations).
 */
export type DistortionKind = "model" | "measured";

/** Every {@linkcode DistortionKind}. */
export const DISTORTION_KINDS: readonly DistortionKind[] = ["model", "measured"];

/**
 * Checks an optional plan `distortion` field.
 *
 * @example
 * ```ts
 * import { isDistortionKind } from "./plan.ts";
 * if (!isDistortionKind("measured") || isDistortionKind("bogus")) throw new Error();
 * ```
 * @param value The field's value.
 */
export function isDistortionKind(value: unknown): value is DistortionKind {
  return (DISTORTION_KINDS as readonly unknown[]).includes(value);
}

/** One layer of a plan. */
export interface WcsgPlanLayer {
  /** Output channels (m). */
  rows: number;
  /** Input columns (n). */
  cols: number;
  /** Vector length v along the input dimension. */
  vectorLength: number;
  /** Row indices in stored order (a permutation of 0..rows-1). */
  channelOrder: number[];
  /** Consecutive ranges of channelOrder with their codebook sizes. */
  groups: { start: number; end: number; codebookSize: number }[];
}

/** A WCSG plan. */
export interface WcsgPlan {
  /** Format tag, always "rsavq-plan". */
  format: "rsavq-plan";
  /** Plan format version, currently 2. */
  version: 2;
  /** Codebook scope the plan was allocated for; absent means "layer". */
  codebookScope?: CodebookScope;
  /** Layers by prefix ("model.layers.0.self_attn.q_proj"). */
  layers: Record<string, WcsgPlanLayer>;
}

/**
 * Reads and validates a plan file.
 *
 * @param path Plan JSON path.
 * @throws {FormatError} Naming the layer and field that is wrong.
 */
export async function readWcsgPlan(path: string): Promise<WcsgPlan> {
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    throw new FormatError(path, "", `Cannot read the plan: ${(err as Error).message}`);
  }
  return validateWcsgPlan(raw, path);
}

/**
 * Checks a parsed plan: format and version, and per layer a permutation channel order and
 * groups that partition it in order with codebook sizes in [1, 65536].
 *
 * @param raw Parsed JSON.
 * @param path Source, for errors.
 */
export function validateWcsgPlan(raw: unknown, path: string): WcsgPlan {
  const plan = raw as WcsgPlan;
  if (plan?.format !== "rsavq-plan") {
    throw new FormatError(
      path,
      "format",
      `Expected "rsavq-plan", got ${
        JSON.stringify(plan?.format)
      }: pass a plan written by deno task allocate`,
    );
  }
  if (plan.version !== 2) {
    throw new FormatError(
      path,
      "version",
      `Unsupported plan version ${plan.version}: expected 2; rerun deno task allocate with this version of the toolkit`,
    );
  }
  if (plan.codebookScope !== undefined && !CODEBOOK_SCOPES.includes(plan.codebookScope)) {
    throw new FormatError(
      path,
      "codebookScope",
      `Expected one of ${CODEBOOK_SCOPES.join(", ")}, got ${JSON.stringify(plan.codebookScope)}`,
    );
  }
  const distortion = (raw as { distortion?: unknown }).distortion;
  if (distortion !== undefined && !isDistortionKind(distortion)) {
    throw new FormatError(
      path,
      "distortion",
      `Expected one of ${DISTORTION_KINDS.join(", ")}, got ${
        JSON.stringify(distortion)
      }: pass a plan written by deno task allocate`,
    );
  }
  if (typeof plan.layers !== "object" || plan.layers === null) {
    throw new FormatError(path, "layers", "Expected an object of layers");
  }
  for (const [prefix, layer] of Object.entries(plan.layers)) {
    const field = (f: string) => `layers.${prefix}.${f}`;
    for (const key of ["rows", "cols", "vectorLength"] as const) {
      if (!Number.isSafeInteger(layer[key]) || layer[key] <= 0) {
        throw new FormatError(path, field(key), `Expected a positive integer, got ${layer[key]}`);
      }
    }
    const order = layer.channelOrder;
    const seen = new Uint8Array(layer.rows);
    if (
      !Array.isArray(order) || order.length !== layer.rows ||
      !order.every((r) =>
        Number.isInteger(r) && r >= 0 && r < layer.rows && !seen[r] && (seen[r] = 1)
      )
    ) {
      throw new FormatError(
        path,
        field("channelOrder"),
        `Expected a permutation of 0..${layer.rows - 1}`,
      );
    }
    let next = 0;
    for (const [g, group] of (layer.groups ?? []).entries()) {
      if (group.start !== next || !(group.end > group.start) || group.end > layer.rows) {
        throw new FormatError(
          path,
          field(`groups[${g}]`),
          `Groups must partition 0..${layer.rows} in order; got start ${group.start}, end ${group.end} after ${next}`,
        );
      }
      if (
        !Number.isInteger(group.codebookSize) || group.codebookSize < 1 ||
        group.codebookSize > MAX_CODEBOOK_SIZE
      ) {
        throw new FormatError(
          path,
          field(`groups[${g}].codebookSize`),
          `Expected an integer in [1, ${MAX_CODEBOOK_SIZE}], got ${group.codebookSize}`,
        );
      }
      next = group.end;
    }
    if (next !== layer.rows) {
      throw new FormatError(path, field("groups"), `Groups cover 0..${next} of ${layer.rows} rows`);
    }
  }
  return plan;
}

/**
 * Channel groups of one plan layer, for the VQ quantizers. A layer with one group lists
 * its rows in natural order: one codebook serves them all, so their order changes nothing
 * worth storing, and the quantizer then stores no permutation, as the allocator counts
 * (`storesChannelOrder` in src/quantize/bpw.ts).
 *
 * @param layer Validated plan layer.
 */
export function planGroups(layer: WcsgPlanLayer): VqGroupSpec[] {
  return layer.groups.map((g) => {
    const rows = Uint32Array.from(layer.channelOrder.slice(g.start, g.end));
    return {
      rows: storesChannelOrder(layer.channelOrder, layer.groups.length) ? rows : rows.sort(),
      codebookSize: g.codebookSize,
      residualSize: 0,
    };
  });
}

/**
 * Returns the codebook scope to quantize a plan with: the plan's own (absent: "layer"),
 * because its bits per weight count shared codebooks for that scope only. A requested
 * scope that differs (or `auto`) is an error.
 *
 * @example
 * ```ts
 * import { planCodebookScope } from "./plan.ts";
 * const plan = { format: "rsavq-plan" as const, version: 2 as const, codebookScope: "model" as const, layers: {} };
 * if (planCodebookScope(plan, undefined) !== "model") throw new Error();
 * ```
 * @param plan Validated plan.
 * @param requested The --codebook-scope given, or undefined.
 * @throws {UsageError} When `requested` is given and differs from the plan's scope.
 */
export function planCodebookScope(plan: WcsgPlan, requested: string | undefined): CodebookScope {
  const scope = plan.codebookScope ?? "layer";
  if (requested !== undefined && requested !== scope) {
    // "auto" compares scopes at quantization time, which a plan's fixed sizes rule out.
    const fix = requested === "auto"
      ? "drop --codebook-scope (auto cannot follow a plan)"
      : `drop --codebook-scope, or rerun deno task allocate with --codebook-scope ${requested}`;
    throw new UsageError(
      `--codebook-scope ${requested} differs from the plan's codebook scope ${scope}, for which its bits were allocated: ${fix}`,
    );
  }
  return scope;
}
