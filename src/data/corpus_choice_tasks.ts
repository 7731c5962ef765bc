/**
 * Multiple-choice questions cut from held-out text, for zero-shot checks of a model
 * trained on the rest of the corpus (the shipped reference model): the same text domain,
 * never seen in training. Two tasks, four choices each:
 *
 * - `next-sentence`: a sentence of a paragraph, then the sentence that follows against
 *   three sentences of similar length from other documents.
 * - `next-word`: the sentence before (if any) and the start of a sentence, then the word
 *   that follows against three words drawn from other documents.
 *
 * Wrong choices come from the same collection (Moby Dick or the addresses) when it has
 * other documents, and every choice of a question is distinct.
 *
 * Lines use the native layout of src/data/choice_tasks.ts: context, choices, the index of
 * the right choice in `answer`, and task.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import { Rng } from "../util/rng.ts";
import type { CorpusDocument } from "./corpus.ts";

/** One question in the native task-file layout. */
export interface NativeChoiceLine {
  /** Text before the choices, without a trailing space. */
  context: string;
  /** Candidate continuations; each is scored after a space. */
  choices: string[];
  /** Index of the continuation that follows in the source text. */
  answer: number;
  /** Task name. */
  task: "next-sentence" | "next-word";
  /** Source document id, so a reader can check the right choice. */
  source: string;
}

/** Options of {@linkcode corpusChoiceQuestions}. */
export interface CorpusChoiceOptions {
  /** Seed of every random pick. */
  seed: number;
  /** Questions per task. */
  perTask: number;
}

/** A sentence and the document it came from, with the sentence before it in its paragraph (if any). */
interface SentenceRef {
  doc: number;
  before: string[];
  text: string;
}

const CHOICES = 4;
/** Sentences between these lengths (characters) make readable contexts and choices. */
const MIN_SENTENCE = 30, MAX_SENTENCE = 200;
/** Words that can be a blank or a wrong choice: lower-case letters only, three or more. */
const PLAIN_WORD = /^[a-z]{3,}$/;
/** Words before the blank of a next-word question. */
const MIN_PREFIX_WORDS = 6;

/**
 * Builds `perTask` questions of each task from documents, deterministically in the seed.
 *
 * @example
 * ```ts
 * import { corpusChoiceQuestions } from "./corpus_choice_tasks.ts";
 * const text = (k: number) =>
 *   Array.from({ length: 8 }, (_, i) => `Sentence ${i} of document ${k} says something plain here.`).join(" ");
 * const docs = [0, 1, 2, 3].map((k) => ({ id: `d${k}`, text: text(k) }));
 * const lines = corpusChoiceQuestions(docs, { seed: 1, perTask: 2 });
 * if (lines.length !== 4) throw new Error("expected two questions per task");
 * ```
 * @param docs Held-out documents.
 * @param options Seed and size.
 * @returns `next-sentence` questions, then `next-word` questions.
 * @throws {UsageError} When the documents hold too few usable sentences.
 */
export function corpusChoiceQuestions(
  docs: readonly CorpusDocument[],
  options: CorpusChoiceOptions,
): NativeChoiceLine[] {
  const sentences = docs.flatMap((d, doc) => paragraphSentences(d.text, doc));
  const followers = sentences.filter((s) => s.before.length > 0);
  if (followers.length < options.perTask || sentences.length < CHOICES * 2) {
    throw new UsageError(
      `The documents hold ${followers.length} sentences that follow another in a paragraph; ${options.perTask} questions per task need more text`,
    );
  }
  const rng = new Rng(options.seed);
  const picks = sample(followers, options.perTask, rng);
  return [
    ...picks.map((s) => nextSentence(s, sentences, docs, rng)),
    ...sample(sentences.filter((s) => blankSlots(s.text).length > 0), options.perTask, rng)
      .map((s) => nextWord(s, sentences, docs, rng)),
  ];
}

/** Splits a document into sentences of usable length, each with the sentence before it in its paragraph. */
function paragraphSentences(text: string, doc: number): SentenceRef[] {
  const out: SentenceRef[] = [];
  for (const paragraph of text.split(/\n{2,}/)) {
    const flat = paragraph.replace(/\s+/g, " ").trim();
    const parts = flat.split(/(?<=[.!?])\s+(?=[A-Z"])/);
    for (let i = 0; i < parts.length; i++) {
      const s = parts[i];
      if (s.length < MIN_SENTENCE || s.length > MAX_SENTENCE) continue;
      out.push({ doc, before: parts.slice(Math.max(0, i - 1), i), text: s });
    }
  }
  return out;
}

function nextSentence(
  s: SentenceRef,
  all: SentenceRef[],
  docs: readonly CorpusDocument[],
  rng: Rng,
): NativeChoiceLine {
  const others = distractorSentences(s, all, docs);
  const near = others.filter((t) =>
    t.length > s.text.length / 1.5 && t.length < s.text.length * 1.5
  );
  const pool = near.length >= CHOICES - 1 ? near : others;
  const wrong = sample(pool, CHOICES - 1, rng);
  return place("next-sentence", s.before.join(" "), s.text, wrong, docs[s.doc].id, rng);
}

function nextWord(
  s: SentenceRef,
  all: SentenceRef[],
  docs: readonly CorpusDocument[],
  rng: Rng,
): NativeChoiceLine {
  const words = s.text.split(" ");
  const slots = blankSlots(s.text);
  const at = slots[Math.floor(rng.next() * slots.length)];
  const answer = words[at];
  const pool = new Set(
    distractorSentences(s, all, docs).flatMap((t) => t.split(" "))
      .filter((w) => PLAIN_WORD.test(w) && w !== answer),
  );
  const wrong = sample([...pool], CHOICES - 1, rng);
  const context = [...s.before, words.slice(0, at).join(" ")].join(" ");
  return place("next-word", context, answer, wrong, docs[s.doc].id, rng);
}

/**
 * Distinct sentence texts of other documents, from the same collection (the id part before
 * "/") when it has other documents, so that a wrong choice is not given away by its style.
 */
function distractorSentences(
  s: SentenceRef,
  all: SentenceRef[],
  docs: readonly CorpusDocument[],
): string[] {
  const collection = (doc: number) => docs[doc].id.split("/")[0];
  const others = all.filter((o) => o.doc !== s.doc && o.text !== s.text);
  const same = others.filter((o) => collection(o.doc) === collection(s.doc));
  const texts = [...new Set((same.length >= CHOICES - 1 ? same : others).map((o) => o.text))];
  if (texts.length < CHOICES - 1) {
    throw new UsageError(
      `Wrong choices for a question from ${
        docs[s.doc].id
      } need sentences from other documents: pass at least two documents with text`,
    );
  }
  return texts;
}

/** Word indices that can be a next-word blank: plain lower-case words after the first few. */
function blankSlots(sentence: string): number[] {
  const words = sentence.split(" ");
  return words.map((_, i) => i).filter((i) => i >= MIN_PREFIX_WORDS && PLAIN_WORD.test(words[i]));
}

/** Puts the right choice at a random index among the wrong ones. */
function place(
  task: NativeChoiceLine["task"],
  context: string,
  right: string,
  wrong: string[],
  source: string,
  rng: Rng,
): NativeChoiceLine {
  const answer = Math.floor(rng.next() * CHOICES);
  const choices = [...wrong];
  choices.splice(answer, 0, right);
  return { context, choices, answer, task, source };
}

/** Draws `n` distinct items (fewer when the list is shorter), in draw order. */
function sample<T>(items: readonly T[], n: number, rng: Rng): T[] {
  const idx = items.map((_, i) => i);
  const count = Math.min(n, idx.length);
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(rng.next() * (idx.length - i));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, count).map((i) => items[i]);
}
