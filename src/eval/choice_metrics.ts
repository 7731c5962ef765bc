/**
 * Accuracy metrics of multiple-choice evaluation, computed as lm-evaluation-harness
 * computes them:
 * - `acc`: the choice with the highest summed log-likelihood is the prediction
 *   (the first on ties, like numpy's argmax).
 * - `acc_norm`: the same after dividing each sum by the choice's length.
 * - Standard errors are the harness's `mean_stderr`: the sample standard deviation
 *   (n - 1 in the denominator) over sqrt(n), which for a 0/1 score is sqrt(p(1-p)/(n-1)).
 *   It is NaN for fewer than 2 questions, where the harness prints "N/A".
 * - The average over tasks is the unweighted mean of the task scores (each task counts
 *   once, whatever its size). Its standard error is sqrt(sum of squared task errors) / k,
 *   which assumes the k tasks are independent samples.
 *
 * Keys are snake_case because they are the keys of `deno task eval --json`.
 *
 * @module
 */

/** The result of one question for one model. */
export interface ChoiceQuestionScore {
  /** Task name. */
  task: string;
  /** Task file of the question. */
  file: string;
  /** 1-based line of the question in `file`. */
  line: number;
  /** Index of the correct choice. */
  answer: number;
  /** Summed log-likelihood of each choice's continuation, in nats. */
  ll: number[];
  /** The acc_norm divisor of each choice (UTF-8 bytes, characters or token count). */
  norm_length: number[];
  /** Choice with the highest `ll`. */
  pred: number;
  /** Choice with the highest `ll / norm_length`. */
  pred_norm: number;
  /** 1 when `pred` is the answer, else 0. */
  acc: number;
  /** 1 when `pred_norm` is the answer, else 0. */
  acc_norm: number;
}

/** Accuracy of one task. */
export interface TaskAccuracy {
  /** Task name. */
  task: string;
  /** Number of questions. */
  questions: number;
  /** Mean `acc` over the questions, a fraction in [0, 1]. */
  acc: number;
  /** Standard error of `acc` (NaN for fewer than 2 questions). */
  acc_stderr: number;
  /** Mean `acc_norm` over the questions, a fraction in [0, 1]. */
  acc_norm: number;
  /** Standard error of `acc_norm` (NaN for fewer than 2 questions). */
  acc_norm_stderr: number;
}

/** Unweighted mean over tasks. */
export interface AverageAccuracy {
  /** Number of tasks averaged. */
  tasks: number;
  /** Number of questions over all tasks. */
  questions: number;
  /** Unweighted mean of the task `acc` values, a fraction in [0, 1]. */
  acc: number;
  /** Standard error of `acc`: sqrt(sum of squared task errors) / tasks. */
  acc_stderr: number;
  /** Unweighted mean of the task `acc_norm` values, a fraction in [0, 1]. */
  acc_norm: number;
  /** Standard error of `acc_norm`: sqrt(sum of squared task errors) / tasks. */
  acc_norm_stderr: number;
}

/** Model minus reference on the same questions of one task, as fractions in [-1, 1]. */
export interface TaskDifference {
  /** Task name. */
  task: string;
  /** Number of questions compared. */
  questions: number;
  /** Reference mean `acc` on these questions. */
  ref_acc: number;
  /** Reference mean `acc_norm` on these questions. */
  ref_acc_norm: number;
  /** Mean of the per-question differences acc_model - acc_ref. */
  acc_diff: number;
  /** Paired standard error of `acc_diff`. */
  acc_diff_stderr: number;
  /** Mean of the per-question differences acc_norm_model - acc_norm_ref. */
  acc_norm_diff: number;
  /** Paired standard error of `acc_norm_diff`. */
  acc_norm_diff_stderr: number;
  /** Questions that only the model gets right under `acc`. */
  model_only_correct: number;
  /** Questions that only the reference gets right under `acc`. */
  ref_only_correct: number;
}

/** Unweighted mean of the task differences. */
export interface AverageDifference {
  /** Number of tasks averaged. */
  tasks: number;
  /** Number of questions over all tasks. */
  questions: number;
  /** Unweighted mean of the task `acc_diff` values. */
  acc_diff: number;
  /** Standard error of `acc_diff`: sqrt(sum of squared task errors) / tasks. */
  acc_diff_stderr: number;
  /** Unweighted mean of the task `acc_norm_diff` values. */
  acc_norm_diff: number;
  /** Standard error of `acc_norm_diff`: sqrt(sum of squared task errors) / tasks. */
  acc_norm_diff_stderr: number;
}

/**
 * Picks the `acc` and `acc_norm` predictions from per-choice log-likelihoods.
 *
 * @example A long choice wins only after normalisation
 * ```ts
 * import { pickChoices } from "./choice_metrics.ts";
 * const { pred, pred_norm } = pickChoices([-4, -6], [2, 6]);
 * if (pred !== 0 || pred_norm !== 1) throw new Error("wrong predictions");
 * ```
 * @param ll Summed log-likelihood per choice.
 * @param lengths Positive length per choice.
 * @returns The argmax of `ll` and of `ll / lengths`, first index on ties.
 */
export function pickChoices(
  ll: readonly number[],
  lengths: readonly number[],
): { pred: number; pred_norm: number } {
  let pred = 0, predNorm = 0;
  for (let i = 1; i < ll.length; i++) {
    if (ll[i] > ll[pred]) pred = i;
    if (ll[i] / lengths[i] > ll[predNorm] / lengths[predNorm]) predNorm = i;
  }
  return { pred, pred_norm: predNorm };
}

/**
 * Mean and the harness's standard error of the mean, sample std / sqrt(n).
 *
 * @example Three right out of four: stderr = sqrt(0.75 * 0.25 / 3)
 * ```ts
 * import { meanStderr } from "./choice_metrics.ts";
 * const { mean, stderr } = meanStderr([1, 1, 0, 1]);
 * if (mean !== 0.75 || Math.abs(stderr - Math.sqrt(0.0625)) > 1e-15) throw new Error();
 * ```
 * @param values Per-question scores.
 * @returns `mean` (NaN when empty) and `stderr` (NaN for fewer than 2 values).
 */
export function meanStderr(values: readonly number[]): { mean: number; stderr: number } {
  const n = values.length;
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / n;
  if (n < 2) return { mean, stderr: NaN };
  let squares = 0;
  for (const v of values) squares += (v - mean) * (v - mean);
  return { mean, stderr: Math.sqrt(squares / (n - 1) / n) };
}

/**
 * Groups question scores by task (in order of first appearance) and averages them.
 *
 * @param scores Per-question results.
 * @returns Per-task accuracies and their unweighted mean.
 */
export function summarizeChoiceScores(
  scores: readonly ChoiceQuestionScore[],
): { tasks: TaskAccuracy[]; average: AverageAccuracy } {
  const tasks = [...groupByTask(scores)].map(([task, group]): TaskAccuracy => {
    const acc = meanStderr(group.map((s) => s.acc));
    const accNorm = meanStderr(group.map((s) => s.acc_norm));
    return {
      task,
      questions: group.length,
      acc: acc.mean,
      acc_stderr: acc.stderr,
      acc_norm: accNorm.mean,
      acc_norm_stderr: accNorm.stderr,
    };
  });
  const acc = averageOverTasks(tasks.map((t) => [t.acc, t.acc_stderr]));
  const accNorm = averageOverTasks(tasks.map((t) => [t.acc_norm, t.acc_norm_stderr]));
  return {
    tasks,
    average: {
      tasks: tasks.length,
      questions: scores.length,
      acc: acc.mean,
      acc_stderr: acc.stderr,
      acc_norm: accNorm.mean,
      acc_norm_stderr: accNorm.stderr,
    },
  };
}

/**
 * Compares two models question by question. The difference is paired: each question
 * contributes acc_model - acc_ref in {-1, 0, 1}, and the standard error is that of the
 * mean of these differences, which is smaller than that of two independent accuracies
 * whenever the models tend to agree.
 *
 * @example
 * ```ts ignore
 * const diff = compareChoiceScores(result.samples, refResult.samples);
 * console.log(diff.average.acc_diff, diff.average.acc_diff_stderr);
 * ```
 * @param model Scores of the evaluated model.
 * @param ref Scores of the reference model on the same questions, in the same order.
 * @returns Per-task differences and their unweighted mean.
 * @throws {Error} When the two lists are not the same questions.
 */
export function compareChoiceScores(
  model: readonly ChoiceQuestionScore[],
  ref: readonly ChoiceQuestionScore[],
): { tasks: TaskDifference[]; average: AverageDifference } {
  if (
    model.length !== ref.length ||
    model.some((s, i) => s.file !== ref[i].file || s.line !== ref[i].line)
  ) {
    throw new Error(
      "Cannot compare scores of different question lists: score both models on the same questions",
    );
  }
  const refByQuestion = new Map(model.map((s, i) => [s, ref[i]]));
  const tasks = [...groupByTask(model)].map(([task, group]): TaskDifference => {
    const pairs = group.map((s) => [s, refByQuestion.get(s)!] as const);
    const acc = meanStderr(pairs.map(([m, r]) => m.acc - r.acc));
    const accNorm = meanStderr(pairs.map(([m, r]) => m.acc_norm - r.acc_norm));
    return {
      task,
      questions: group.length,
      ref_acc: meanStderr(pairs.map(([, r]) => r.acc)).mean,
      ref_acc_norm: meanStderr(pairs.map(([, r]) => r.acc_norm)).mean,
      acc_diff: acc.mean,
      acc_diff_stderr: acc.stderr,
      acc_norm_diff: accNorm.mean,
      acc_norm_diff_stderr: accNorm.stderr,
      model_only_correct: pairs.filter(([m, r]) => m.acc > r.acc).length,
      ref_only_correct: pairs.filter(([m, r]) => m.acc < r.acc).length,
    };
  });
  const acc = averageOverTasks(tasks.map((t) => [t.acc_diff, t.acc_diff_stderr]));
  const accNorm = averageOverTasks(tasks.map((t) => [t.acc_norm_diff, t.acc_norm_diff_stderr]));
  return {
    tasks,
    average: {
      tasks: tasks.length,
      questions: model.length,
      acc_diff: acc.mean,
      acc_diff_stderr: acc.stderr,
      acc_norm_diff: accNorm.mean,
      acc_norm_diff_stderr: accNorm.stderr,
    },
  };
}

function groupByTask(scores: readonly ChoiceQuestionScore[]): Map<string, ChoiceQuestionScore[]> {
  const groups = new Map<string, ChoiceQuestionScore[]>();
  for (const s of scores) {
    const group = groups.get(s.task);
    if (group) group.push(s);
    else groups.set(s.task, [s]);
  }
  return groups;
}

/** Unweighted mean of k task values; stderr sqrt(sum se^2) / k for independent tasks. */
function averageOverTasks(
  values: readonly (readonly [number, number])[],
): { mean: number; stderr: number } {
  const k = values.length;
  let sum = 0, variance = 0;
  for (const [value, stderr] of values) {
    sum += value;
    variance += stderr * stderr;
  }
  return { mean: sum / k, stderr: Math.sqrt(variance) / k };
}
