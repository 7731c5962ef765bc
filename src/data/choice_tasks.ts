/**
 * Multiple-choice task files in JSONL, one question a line, in five field layouts that
 * are detected per line. Each question becomes one (context, continuation) request per
 * choice, built with the prompts of lm-evaluation-harness (v0.4 task configs) so that
 * accuracies are comparable with published figures:
 *
 * | layout     | fields                                   | context                              | continuation          |
 * | ---------- | ---------------------------------------- | ------------------------------------ | --------------------- |
 * | native     | context, choices, answer (index), task?  | `context`                            | " " + choice          |
 * | PIQA       | goal, sol1, sol2, label                  | "Question: {goal}\nAnswer:"          | " " + sol             |
 * | ARC        | question, choices.{text,label}, answerKey| "Question: {question}\nAnswer:"      | " " + text            |
 * | HellaSwag  | ctx (or ctx_a, ctx_b), endings, label    | cleaned "{activity_label}: {ctx}"    | " " + cleaned ending  |
 * | WinoGrande | sentence with `_`, option1, option2, answer | sentence before `_`, then the option | " " + sentence after `_` |
 *
 * WinoGrande is scored as the harness does (partial scoring): both choices share the
 * continuation after the blank and differ in their contexts. Native lines may instead give
 * `context` and `choices` as token-id arrays for models without a tokenizer; their
 * continuation is the choice's ids, with nothing added.
 *
 * @module
 */
import { basename, extname } from "node:path";
import { FormatError, UsageError } from "../errors.ts";

/** Field layout of one task line. */
export type ChoiceLayout = "native" | "piqa" | "arc" | "hellaswag" | "winogrande";

/** Fields shared by text and token-id questions. */
export interface QuestionBase {
  /** Task name: the line's `task` field, else the file name without its extension. */
  task: string;
  /** Layout the line was detected as. */
  layout: ChoiceLayout;
  /** File the question came from. */
  file: string;
  /** 1-based line number in `file`. */
  line: number;
  /** Index of the correct choice. */
  answer: number;
}

/** A question whose requests are text, tokenized at scoring time. */
export interface TextChoiceQuestion extends QuestionBase {
  /** Discriminant: requests are text. */
  kind: "text";
  /** One request per choice, in the file's order. */
  requests: { context: string; continuation: string }[];
  /**
   * The choice strings whose length divides the log-likelihood for acc_norm, as the
   * harness defines them: the choice without the leading space, and for WinoGrande the
   * whole partial context (sentence up to the blank, then the option).
   */
  choices: string[];
}

/** A question given as token ids (native layout only). */
export interface TokenChoiceQuestion extends QuestionBase {
  /** Discriminant: requests are token ids. */
  kind: "ids";
  /** One request per choice; `context` is at least one id and `continuation` too. */
  requests: { context: number[]; continuation: number[] }[];
}

/** One parsed question. */
export type ChoiceQuestion = TextChoiceQuestion | TokenChoiceQuestion;

/** A malformed task line, naming the file, line and field. */
export class ChoiceLineError extends FormatError {
  /** Path of the task file. */
  readonly path: string;
  /** 1-based line number. */
  readonly line: number;
  /** The message without the `file:line: field: ` prefix. */
  readonly detail: string;

  /**
   * Creates the error; the message reads `file:line: field: detail`.
   *
   * @param path Task file.
   * @param line 1-based line number.
   * @param field Offending field, or "" for the whole line.
   * @param detail What is wrong and how to fix it.
   */
  constructor(path: string, line: number, field: string, detail: string) {
    super(`${path}:${line}`, field, detail);
    this.name = "ChoiceLineError";
    this.path = path;
    this.line = line;
    this.detail = detail;
  }
}

/** Options of {@linkcode parseChoiceTasks} and {@linkcode readChoiceTasks}. */
export interface ChoiceParseOptions {
  /** Skip malformed lines (they are returned in `invalid`) instead of throwing. Default false. */
  skipInvalid?: boolean;
}

/** Parsed questions plus the lines that were skipped. */
export interface ParsedChoiceTasks {
  /** Parsed questions, in input order. */
  questions: ChoiceQuestion[];
  /** Malformed lines, empty unless `skipInvalid` was set. */
  invalid: ChoiceLineError[];
}

/** Origin of a line, for task names and messages. */
interface LineSource {
  file: string;
  line: number;
  defaultTask: string;
}

/**
 * Parses the text of one JSONL task file. Blank lines are ignored.
 *
 * @example A PIQA line
 * ```ts
 * import { parseChoiceTasks } from "./choice_tasks.ts";
 * const text = '{"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Eat the lid.", "label": 0}';
 * const { questions } = parseChoiceTasks(text, "piqa.jsonl");
 * const q = questions[0];
 * if (q.kind !== "text" || q.requests[1].continuation !== " Eat the lid.") throw new Error();
 * if (q.task !== "piqa" || q.answer !== 0) throw new Error();
 * ```
 * @param text File contents.
 * @param file Path, used for task names and messages.
 * @param options `skipInvalid`.
 * @returns Questions in file order and the skipped lines.
 * @throws {ChoiceLineError} At the first malformed line unless `skipInvalid`; the message
 *   counts the other malformed lines.
 */
export function parseChoiceTasks(
  text: string,
  file: string,
  options: ChoiceParseOptions = {},
): ParsedChoiceTasks {
  const defaultTask = basename(file, extname(file));
  const questions: ChoiceQuestion[] = [];
  const invalid: ChoiceLineError[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].trim();
    if (raw === "") continue;
    const source = { file, line: i + 1, defaultTask };
    try {
      questions.push(parseChoiceLine(parseJson(raw, source), source));
    } catch (error) {
      if (!(error instanceof ChoiceLineError)) throw error;
      invalid.push(error);
    }
  }
  if (invalid.length > 0 && !options.skipInvalid) throw withCount(invalid);
  return { questions, invalid };
}

/**
 * Reads and parses task files. Every file is parsed before anything is returned, so a
 * malformed line stops the run before any scoring.
 *
 * @example
 * ```ts ignore
 * const { questions } = await readChoiceTasks(["arc_easy.jsonl", "piqa.jsonl"]);
 * ```
 * @param paths JSONL files.
 * @param options `skipInvalid`.
 * @returns All questions, file by file, and the skipped lines.
 * @throws {UsageError} When a file cannot be read or no question remains.
 * @throws {ChoiceLineError} At the first malformed line of any file unless `skipInvalid`.
 */
export async function readChoiceTasks(
  paths: readonly string[],
  options: ChoiceParseOptions = {},
): Promise<ParsedChoiceTasks> {
  const questions: ChoiceQuestion[] = [];
  const invalid: ChoiceLineError[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      const reason = error instanceof Deno.errors.NotFound
        ? "file not found"
        : (error as Error).message;
      throw new UsageError(`Cannot read task file ${path}: ${reason}`);
    }
    const parsed = parseChoiceTasks(text, path, { skipInvalid: true });
    questions.push(...parsed.questions);
    invalid.push(...parsed.invalid);
  }
  if (invalid.length > 0 && !options.skipInvalid) throw withCount(invalid);
  if (questions.length === 0) throw new UsageError(`No valid question in ${paths.join(", ")}`);
  return { questions, invalid };
}

/**
 * Parses one decoded JSON line, detecting its layout from the fields present.
 *
 * @param value The line's JSON value.
 * @param source File, line number and default task name.
 * @throws {ChoiceLineError} When the layout is unknown or a field is invalid.
 */
export function parseChoiceLine(value: unknown, source: LineSource): ChoiceQuestion {
  const fail = (field: string, detail: string) =>
    new ChoiceLineError(source.file, source.line, field, detail);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw fail("", "Expected a JSON object per line");
  }
  const obj = value as Record<string, unknown>;
  const task = taskName(obj, source, fail);
  const base = { task, file: source.file, line: source.line };
  if ("context" in obj) return parseNative(obj, base, fail);
  if ("answerKey" in obj) return parseArc(obj, base, fail);
  if ("goal" in obj) return parsePiqa(obj, base, fail);
  if ("endings" in obj) return parseHellaswag(obj, base, fail);
  if ("sentence" in obj && "option1" in obj) return parseWinogrande(obj, base, fail);
  throw fail(
    "",
    `Unknown layout with fields ${
      Object.keys(obj).join(", ") || "(none)"
    }: expected context/choices/answer (native), ` +
      "goal/sol1/sol2/label (PIQA), question/choices/answerKey (ARC), ctx/endings/label (HellaSwag) " +
      "or sentence/option1/option2/answer (WinoGrande)",
  );
}

type Fail = (field: string, detail: string) => ChoiceLineError;
type Base = { task: string; file: string; line: number };

// ---------------------------------------------------------------------------------------
// layouts

function parseNative(obj: Record<string, unknown>, base: Base, fail: Fail): ChoiceQuestion {
  const { context, choices } = obj;
  if (!Array.isArray(choices) || choices.length < 2) {
    throw fail("choices", "Expected an array of at least 2 choices (strings, or token-id arrays)");
  }
  const answer = index(obj.answer, choices.length, "answer", fail);
  if (typeof context === "string") {
    const texts = choices.map((c, i) => text(c, `choices[${i}]`, fail));
    return {
      ...base,
      layout: "native",
      kind: "text",
      answer,
      choices: texts,
      requests: texts.map((c) => ({ context, continuation: " " + c })),
    };
  }
  if (Array.isArray(context)) {
    const ids = tokenIds(context, "context", fail);
    const continuations = choices.map((c, i) => tokenIds(c, `choices[${i}]`, fail));
    return {
      ...base,
      layout: "native",
      kind: "ids",
      answer,
      requests: continuations.map((continuation) => ({ context: ids, continuation })),
    };
  }
  throw fail("context", "Expected a string, or an array of token ids");
}

function parsePiqa(obj: Record<string, unknown>, base: Base, fail: Fail): ChoiceQuestion {
  const goal = text(obj.goal, "goal", fail);
  const choices = [text(obj.sol1, "sol1", fail), text(obj.sol2, "sol2", fail)];
  const answer = index(obj.label, 2, "label", fail);
  const context = `Question: ${goal}\nAnswer:`;
  return textQuestion(base, "piqa", answer, choices, choices.map(() => context));
}

function parseArc(obj: Record<string, unknown>, base: Base, fail: Fail): ChoiceQuestion {
  // Hugging Face layout: question is a string and choices is {text: [...], label: [...]}.
  // AI2 release layout: question is {stem, choices: [{text, label}, ...]}.
  let question: string, texts: string[], labels: string[];
  if (typeof obj.question === "object" && obj.question !== null && !Array.isArray(obj.question)) {
    const q = obj.question as Record<string, unknown>;
    question = text(q.stem, "question.stem", fail);
    if (!Array.isArray(q.choices)) {
      throw fail("question.choices", "Expected an array of {text, label} objects");
    }
    const list = q.choices as Record<string, unknown>[];
    texts = list.map((c, i) => text(c?.text, `question.choices[${i}].text`, fail));
    labels = list.map((c, i) => label(c?.label, `question.choices[${i}].label`, fail));
  } else {
    question = text(obj.question, "question", fail);
    const choices = obj.choices as Record<string, unknown> | undefined;
    if (!choices || !Array.isArray(choices.text) || !Array.isArray(choices.label)) {
      throw fail("choices", "Expected an object {text: [...], label: [...]}");
    }
    texts = choices.text.map((t, i) => text(t, `choices.text[${i}]`, fail));
    labels = choices.label.map((l, i) => label(l, `choices.label[${i}]`, fail));
  }
  if (texts.length < 2 || texts.length !== labels.length) {
    throw fail(
      "choices",
      `Expected at least 2 choices with one label each, got ${texts.length} texts and ${labels.length} labels`,
    );
  }
  const answer = arcAnswer(label(obj.answerKey, "answerKey", fail), labels, fail);
  const context = `Question: ${question}\nAnswer:`;
  return textQuestion(base, "arc", answer, texts, texts.map(() => context));
}

/**
 * Finds answerKey among the labels. A few ARC items use digit labels ("1".."4") where
 * most use letters. When the key's kind differs from the labels', the key is read as a
 * position (1 or A is the first choice), as lm-evaluation-harness v0.3 did.
 */
function arcAnswer(key: string, labels: string[], fail: Fail): number {
  const found = labels.indexOf(key);
  if (found >= 0) return found;
  const position = /^[1-9]$/.test(key)
    ? Number(key) - 1
    : /^[A-Z]$/.test(key)
    ? key.charCodeAt(0) - 65
    : -1;
  if (position >= 0 && position < labels.length) return position;
  throw fail("answerKey", `${JSON.stringify(key)} is not one of the labels ${labels.join(", ")}`);
}

function parseHellaswag(obj: Record<string, unknown>, base: Base, fail: Fail): ChoiceQuestion {
  if (!Array.isArray(obj.endings) || obj.endings.length < 2) {
    throw fail("endings", "Expected an array of at least 2 strings");
  }
  const endings = obj.endings.map((e, i) => hellaswagClean(text(e, `endings[${i}]`, fail)));
  if (obj.label === "") {
    throw fail(
      "label",
      "Empty label: this line comes from the unlabeled test split; use the validation split",
    );
  }
  const answer = index(obj.label, endings.length, "label", fail);

  // the harness joins ctx_a and ctx_b (capitalized); plain `ctx` is that join without the capital
  let ctx: string;
  if (typeof obj.ctx_a === "string" && typeof obj.ctx_b === "string") {
    ctx = obj.ctx_a + " " + pythonCapitalize(obj.ctx_b);
  } else {
    ctx = text(obj.ctx, "ctx", fail);
  }
  const activity = obj.activity_label === undefined
    ? ""
    : text(obj.activity_label, "activity_label", fail) + ": ";
  const context = hellaswagClean(activity + ctx);
  return textQuestion(base, "hellaswag", answer, endings, endings.map(() => context));
}

/**
 * Cleans HellaSwag text as the harness's `preprocess` does: strips whitespace, turns
 * " [title]" into ". ", drops other bracketed WikiHow markers and collapses double spaces.
 */
export function hellaswagClean(value: string): string {
  return value.trim().replaceAll(" [title]", ". ").replace(/\[.*?\]/g, "").replaceAll("  ", " ");
}

/** Python's `str.capitalize`: first character upper case, the rest lower case. */
function pythonCapitalize(value: string): string {
  const [first = "", ...rest] = value;
  return first.toUpperCase() + rest.join("").toLowerCase();
}

function parseWinogrande(obj: Record<string, unknown>, base: Base, fail: Fail): ChoiceQuestion {
  const sentence = text(obj.sentence, "sentence", fail);
  const blank = sentence.indexOf("_");
  if (blank < 0) throw fail("sentence", "Missing the blank `_` that the options fill");
  const options = [text(obj.option1, "option1", fail), text(obj.option2, "option2", fail)];
  const answer = obj.answer === "1" || obj.answer === 1
    ? 0
    : obj.answer === "2" || obj.answer === 2
    ? 1
    : -1;
  if (answer < 0) throw fail("answer", `Expected "1" or "2", got ${JSON.stringify(obj.answer)}`);

  // partial scoring: context = sentence up to the blank + option, continuation = the rest
  const contexts = options.map((o) => sentence.slice(0, blank) + o);
  const continuation = " " + sentence.slice(blank + 1).trim();
  return {
    ...base,
    layout: "winogrande",
    kind: "text",
    answer,
    choices: contexts,
    requests: contexts.map((context) => ({ context, continuation })),
  };
}

function textQuestion(
  base: Base,
  layout: ChoiceLayout,
  answer: number,
  choices: string[],
  contexts: string[],
): TextChoiceQuestion {
  return {
    ...base,
    layout,
    kind: "text",
    answer,
    choices,
    requests: choices.map((c, i) => ({ context: contexts[i], continuation: " " + c })),
  };
}

// ---------------------------------------------------------------------------------------
// field checks

function parseJson(raw: string, source: LineSource): unknown {
  try {
    return JSON.parse(raw);
  } catch (error) {
    throw new ChoiceLineError(
      source.file,
      source.line,
      "",
      `Invalid JSON (${(error as Error).message})`,
    );
  }
}

function taskName(obj: Record<string, unknown>, source: LineSource, fail: Fail): string {
  if (obj.task === undefined) return source.defaultTask;
  if (typeof obj.task !== "string" || obj.task.trim() === "") {
    throw fail("task", "Expected a non-empty string");
  }
  return obj.task;
}

function text(value: unknown, field: string, fail: Fail): string {
  if (typeof value !== "string") throw fail(field, `Expected a string, got ${describe(value)}`);
  // an empty choice would divide acc_norm by zero (a native context string may be empty)
  if (value.trim() === "") throw fail(field, "Expected a non-empty string");
  return value;
}

function label(value: unknown, field: string, fail: Fail): string {
  if (typeof value === "number" && Number.isSafeInteger(value)) return String(value);
  if (typeof value !== "string" || value === "") {
    throw fail(field, `Expected a label string, got ${describe(value)}`);
  }
  return value;
}

/** An integer index in [0, count), given as a number or a digit string as the releases do. */
function index(value: unknown, count: number, field: string, fail: Fail): number {
  const n = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0 || n >= count) {
    throw fail(field, `Expected an integer index in [0, ${count}), got ${describe(value)}`);
  }
  return n;
}

function tokenIds(value: unknown, field: string, fail: Fail): number[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw fail(
      field,
      "Expected a non-empty array of token ids (a token-id context needs at least one id, such as BOS)",
    );
  }
  for (const [i, id] of value.entries()) {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
      throw fail(`${field}[${i}]`, `Expected a non-negative integer token id, got ${describe(id)}`);
    }
  }
  return value as number[];
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing (the field is missing)";
  const json = JSON.stringify(value);
  return json.length > 40 ? json.slice(0, 37) + "..." : json;
}

/** Restates the first malformed line with a count of the others and the way to skip them. */
function withCount(invalid: ChoiceLineError[]): ChoiceLineError {
  const first = invalid[0];
  const others = invalid.length - 1;
  const more = others === 0 ? "" : `, and ${others} more malformed line${others > 1 ? "s" : ""}`;
  const hint = ` (fix the line${more}, or skip malformed lines with --skip-invalid)`;
  return new ChoiceLineError(first.path, first.line, first.field, first.detail + hint);
}
