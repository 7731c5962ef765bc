/**
 * Command-line value parsers shared by the tasks. Each one throws a UsageError whose
 * message names the flag, quotes the text received and states what is accepted, for
 * example `Invalid --groups "0": expected an integer of at least 1`.
 *
 * @module
 */

import { relative } from "node:path";
import { fileURLToPath } from "node:url";
import { UsageError } from "../src/errors.ts";

/**
 * The model every task uses without `--model`: the reference model in models/reference,
 * trained with `deno task train` as its README.md describes. The path is relative to the
 * working folder, so messages stay short.
 */
export const REFERENCE_MODEL: string =
  relative(Deno.cwd(), fileURLToPath(new URL("../models/reference", import.meta.url))) || ".";

/** Help text of `--model` naming the default. */
export const MODEL_DEFAULT_HELP = `default ${REFERENCE_MODEL}, the shipped reference model`;

/** Kind and bounds that a numeric option accepts. All bounds are optional. */
export interface NumberRule {
  /** Accept only safe integers (Number.isSafeInteger). */
  integer?: boolean;
  /** Smallest accepted value, inclusive. */
  min?: number;
  /** Exclusive lower bound: the value must be strictly greater than this. */
  greaterThan?: number;
  /** Largest accepted value, inclusive. */
  max?: number;
}

/**
 * Parses a finite number from an option's text and checks it against `rule`. Empty or
 * blank text is rejected (Number("") would be 0), and so are NaN and ±Infinity.
 *
 * @example Parse a group count
 * ```ts
 * import { parseNumber } from "./_args.ts";
 * const groups = parseNumber("--groups", "4", { integer: true, min: 1 });
 * if (groups !== 4) throw new Error("parsed wrong");
 * ```
 * @param flag Option name as the user types it, such as "--groups".
 * @param text Text received for the option.
 * @param rule Kind and bounds to enforce; none by default.
 * @returns The parsed value.
 * @throws UsageError naming the flag, the text and the accepted values.
 */
export function parseNumber(flag: string, text: string, rule: NumberRule = {}): number {
  const value = Number(text);
  const ok = text.trim() !== "" && Number.isFinite(value) &&
    (!rule.integer || Number.isSafeInteger(value)) &&
    (rule.min === undefined || value >= rule.min) &&
    (rule.greaterThan === undefined || value > rule.greaterThan) &&
    (rule.max === undefined || value <= rule.max);
  if (!ok) {
    throw new UsageError(`Invalid ${flag} ${JSON.stringify(text)}: expected ${describe(rule)}`);
  }
  return value;
}

/**
 * Parses an option that may be absent: returns undefined for undefined text, else the
 * result of {@link parseNumber}.
 *
 * @param flag Option name as the user types it.
 * @param text Text received, or undefined when the option was not given.
 * @param rule Kind and bounds to enforce; none by default.
 * @throws UsageError when text is given and does not satisfy the rule.
 */
export function optionalNumber(
  flag: string,
  text: string | undefined,
  rule: NumberRule = {},
): number | undefined {
  return text === undefined ? undefined : parseNumber(flag, text, rule);
}

/**
 * Checks that an option's text is one of the allowed words and returns it with the
 * narrower type.
 *
 * @example Parse a scope
 * ```ts
 * import { oneOf } from "./_args.ts";
 * const scope = oneOf("--scope", "layer", ["layer", "model"] as const);
 * if (scope !== "layer") throw new Error("parsed wrong");
 * ```
 * @param flag Option name as the user types it.
 * @param text Text received for the option.
 * @param allowed Accepted words, listed in the error message in this order.
 * @throws UsageError `Invalid FLAG "TEXT": expected one of a, b, c` otherwise.
 */
export function oneOf<T extends string>(flag: string, text: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(text)) {
    throw new UsageError(
      `Invalid ${flag} ${JSON.stringify(text)}: expected one of ${allowed.join(", ")}`,
    );
  }
  return text as T;
}

/**
 * Checks an option that may be absent against the allowed words: returns undefined for
 * undefined text, else the result of {@link oneOf}.
 *
 * @param flag Option name as the user types it.
 * @param text Text received, or undefined when the option was not given.
 * @param allowed Accepted words.
 * @throws UsageError when text is given and is not one of `allowed`.
 */
export function optionalOneOf<T extends string>(
  flag: string,
  text: string | undefined,
  allowed: readonly T[],
): T | undefined {
  return text === undefined ? undefined : oneOf(flag, text, allowed);
}

/** Describes a rule in words, such as "an integer of at least 1 and at most 16" or "a number greater than 0". */
function describe(rule: NumberRule): string {
  const bounds: string[] = [];
  if (rule.min !== undefined) bounds.push(`of at least ${rule.min}`);
  if (rule.greaterThan !== undefined) bounds.push(`greater than ${rule.greaterThan}`);
  if (rule.max !== undefined) bounds.push(`at most ${rule.max}`);
  const kind = rule.integer ? "an integer" : "a number";
  return bounds.length === 0 ? kind : `${kind} ${bounds.join(" and ")}`;
}
