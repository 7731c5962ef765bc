/**
 * Reading and writing plan files (JSON, written atomically, validated both ways).
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { writeTextFileAtomic } from "../util/atomic_write.ts";
import { type Plan, validatePlan } from "./plan.ts";

/**
 * Reads and validates a plan file.
 *
 * @example
 * ```ts ignore
 * const plan = await readPlan("plan.json");
 * console.log(plan.bpw, Object.keys(plan.layers).length);
 * ```
 * @param path Plan file written by `deno task allocate`.
 * @throws {FormatError} When the file is missing, is not JSON or is not a valid plan.
 */
export async function readPlan(path: string): Promise<Plan> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new FormatError(path, "", "Plan file not found: run deno task allocate first");
    }
    throw err;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FormatError(path, "", `Invalid JSON: ${(err as Error).message}`);
  }
  return validatePlan(value, path);
}

/**
 * Validates `plan` and writes it to `path` atomically, one array per line.
 *
 * @param path Output path.
 * @param plan Plan to write.
 * @throws {FormatError} When the plan is not valid (nothing is written then).
 */
export async function writePlan(path: string, plan: Plan): Promise<void> {
  validatePlan(plan, path);
  await writeTextFileAtomic(path, formatPlanJson(plan));
}

/**
 * Formats a plan as indented JSON with every number array on one line, so a plan of a
 * large model stays a few lines per layer.
 *
 * @param plan Plan to format.
 */
export function formatPlanJson(plan: Plan): string {
  const text = JSON.stringify(plan, null, 2);
  return text.replace(
    /\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]/g,
    (_, body: string) => `[${body.replace(/,\s+/g, ",")}]`,
  ) + "\n";
}
