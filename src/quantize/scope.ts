/**
 * Codebook scopes (`--codebook-scope`): how widely one codebook is shared by the linear
 * layers of a model. A scope groups layers, and every layer in a group uses the same
 * codebook for each of its channel groups and stages.
 *
 * - `layer`: one codebook per linear layer (no sharing).
 * - `block`: one per transformer block, shared by its q/k/v/o and MLP projections.
 * - `type`: one per layer type across blocks (all q_proj, all down_proj, ...).
 * - `model`: one for the whole model.
 *
 * Codebook storage counts in bits per weight, and on small models a codebook per layer can
 * cost as many bits as the indices, so wider sharing spends those bits once.
 *
 * @module
 */
import { UsageError } from "../errors.ts";

/** Extent of codebook sharing: per layer, block, layer type or model. */
export type CodebookScope = "layer" | "block" | "type" | "model";

/** Every scope, narrowest first (the order `auto` tries and reports them). */
export const CODEBOOK_SCOPES: readonly CodebookScope[] = ["layer", "block", "type", "model"];

/** Layers that share codebooks: a scope key and its layer prefixes in forward order. */
export interface ScopeGroup {
  /** Key naming the scope, for example "block.3", "type.mlp.down_proj" or "model". */
  key: string;
  /** Layer prefixes in forward order. */
  prefixes: string[];
}

/** Prefix of a linear layer inside a transformer block: "model.layers.{l}.{type}". */
const BLOCK_LAYER = /^model\.layers\.(\d+)\.(.+)$/;

/**
 * Returns the key of the scope that a layer belongs to.
 *
 * @example
 * ```ts
 * import { scopeKey } from "./scope.ts";
 * const prefix = "model.layers.3.mlp.down_proj";
 * if (scopeKey(prefix, "block") !== "block.3") throw new Error();
 * if (scopeKey(prefix, "type") !== "type.mlp.down_proj") throw new Error();
 * if (scopeKey(prefix, "layer") !== prefix || scopeKey(prefix, "model") !== "model") throw new Error();
 * ```
 * @param prefix Layer prefix, "model.layers.{l}.{type}".
 * @param scope Codebook scope.
 * @throws {UsageError} For `block` and `type` when the prefix is not inside a block.
 */
export function scopeKey(prefix: string, scope: CodebookScope): string {
  if (scope === "layer") return prefix;
  if (scope === "model") return "model";
  const match = BLOCK_LAYER.exec(prefix);
  if (!match) {
    throw new UsageError(
      `--codebook-scope ${scope} needs layers named model.layers.{block}.{type}, got ${prefix}: use --codebook-scope layer or model`,
    );
  }
  return scope === "block" ? `block.${match[1]}` : `type.${match[2]}`;
}

/**
 * Groups layers by scope, in the order each scope's first layer appears.
 *
 * @example
 * ```ts
 * import { groupLayersByScope } from "./scope.ts";
 * const groups = groupLayersByScope(
 *   ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"],
 *   "type",
 * );
 * if (groups.length !== 2 || groups[0].prefixes.length !== 2) throw new Error();
 * ```
 * @param prefixes Layer prefixes in forward order.
 * @param scope Codebook scope.
 */
export function groupLayersByScope(prefixes: string[], scope: CodebookScope): ScopeGroup[] {
  const groups = new Map<string, string[]>();
  for (const prefix of prefixes) {
    const key = scopeKey(prefix, scope);
    const members = groups.get(key);
    if (members) members.push(prefix);
    else groups.set(key, [prefix]);
  }
  return [...groups].map(([key, members]) => ({ key, prefixes: members }));
}

/**
 * Tensor name of a codebook shared by a scope: `codebooks.{key}.g{group}.s{stage}`, for
 * example `codebooks.block.0.g0.s0`. Canonical weight names never start with `codebooks.`,
 * so these names cannot collide with them.
 *
 * @param key Scope key from {@linkcode scopeKey}.
 * @param group Channel-group rank within each layer (0 for a layer without a plan).
 * @param stage Stage (0 first, 1 residual).
 */
export function sharedCodebookName(key: string, group: number, stage: number): string {
  return `codebooks.${key}.g${group}.s${stage}`;
}
