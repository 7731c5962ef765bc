import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  ChoiceLineError,
  type ChoiceQuestion,
  hellaswagClean,
  parseChoiceTasks,
  readChoiceTasks,
  type TextChoiceQuestion,
} from "../src/data/choice_tasks.ts";
import { UsageError } from "../src/errors.ts";

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

function asText(q: ChoiceQuestion): TextChoiceQuestion {
  assert.equal(q.kind, "text");
  return q as TextChoiceQuestion;
}

Deno.test("readChoiceTasks parses the PIQA layout", async () => {
  const { questions } = await readChoiceTasks([fixture("choice_piqa.jsonl")]);
  assert.equal(questions.length, 3);
  const q = asText(questions[0]);
  assert.equal(q.layout, "piqa");
  assert.equal(q.task, "choice_piqa");
  assert.equal(q.line, 1);
  assert.equal(q.answer, 0);
  assert.deepEqual(q.requests, [
    {
      context: "Question: How do I keep bread fresh for longer?\nAnswer:",
      continuation: " Store it in a sealed bag in a cool, dry place.",
    },
    {
      context: "Question: How do I keep bread fresh for longer?\nAnswer:",
      continuation: " Store it in an open bowl next to the oven.",
    },
  ]);
  assert.deepEqual(q.choices, [
    "Store it in a sealed bag in a cool, dry place.",
    "Store it in an open bowl next to the oven.",
  ]);
  assert.equal(questions[1].answer, 1);
  // the label may be a digit string
  assert.equal(questions[2].answer, 0);
});

Deno.test("readChoiceTasks parses the ARC layouts", async () => {
  const { questions } = await readChoiceTasks([fixture("choice_arc.jsonl")]);
  assert.equal(questions.length, 4);
  const [letters, digits, nested, mixed] = questions.map(asText);
  assert.equal(letters.layout, "arc");
  assert.equal(letters.answer, 1);
  assert.equal(
    letters.requests[1].context,
    "Question: Which form of energy does a solar panel collect?\nAnswer:",
  );
  assert.equal(letters.requests[1].continuation, " light");
  assert.deepEqual(letters.choices, ["sound", "light", "magnetic", "chemical"]);

  // digit labels with a digit answerKey
  assert.equal(digits.answer, 2);
  assert.equal(digits.requests[2].continuation, " carbon dioxide");

  // the AI2 release nests stem and choices inside `question`
  assert.equal(nested.answer, 1);
  assert.equal(nested.requests[0].context, "Question: Which tool measures temperature?\nAnswer:");
  assert.deepEqual(nested.choices, ["a ruler", "a thermometer", "a scale"]);

  // a digit key against letter labels is a 1-based position
  assert.equal(mixed.answer, 0);
});

Deno.test("readChoiceTasks parses the HellaSwag layout", async () => {
  const { questions } = await readChoiceTasks([fixture("choice_hellaswag.jsonl")]);
  assert.equal(questions.length, 3);
  const [tea, cactus, dog] = questions.map(asText);

  // activity label, ctx_a and ctx_b capitalized; the label is a string
  assert.equal(tea.layout, "hellaswag");
  assert.equal(tea.answer, 0);
  assert.equal(
    tea.requests[0].context,
    "Making tea: A woman fills a kettle with water and sets it on the stove. She",
  );
  assert.equal(
    tea.requests[0].continuation,
    " waits for the water to boil and pours it over a tea bag.",
  );
  assert.equal(tea.choices.length, 4);

  // WikiHow markers are removed as the harness's preprocess does; it strips whitespace
  // before removing them, so the context keeps the space that preceded "[step]"
  assert.equal(cactus.answer, 2);
  assert.equal(
    cactus.requests[0].context,
    "Home and Garden: How to water a cactus. Check the soil first. ",
  );
  assert.deepEqual(cactus.choices, [
    "Water it every hour.",
    "Paint the pot.",
    "Push a finger into the soil to feel whether it is dry. Water only when it is.",
  ]);

  // a line with only ctx uses it as written
  assert.equal(dog.requests[1].context, "The dog sees a ball on the grass. The dog");
  assert.equal(dog.requests[1].continuation, " files a tax return.");
});

Deno.test("readChoiceTasks parses the WinoGrande layout", async () => {
  const { questions } = await readChoiceTasks([fixture("choice_winogrande.jsonl")]);
  assert.equal(questions.length, 2);
  const [trophy, anna] = questions.map(asText);
  assert.equal(trophy.layout, "winogrande");
  assert.equal(trophy.answer, 1);
  // partial scoring: the option ends the context, the rest of the sentence is shared
  assert.deepEqual(trophy.requests, [
    {
      context: "The trophy did not fit in the suitcase because the trophy",
      continuation: " was too small.",
    },
    {
      context: "The trophy did not fit in the suitcase because the suitcase",
      continuation: " was too small.",
    },
  ]);
  assert.deepEqual(trophy.choices, trophy.requests.map((r) => r.context));
  assert.equal(anna.answer, 0);
  assert.equal(anna.requests[1].context, "Anna lent Maria her umbrella because Maria");
  assert.equal(anna.requests[1].continuation, " had two of them.");
});

Deno.test("readChoiceTasks parses native text and token-id lines", async () => {
  const { questions } = await readChoiceTasks([
    fixture("choice_native.jsonl"),
    fixture("choice_ids.jsonl"),
  ]);
  assert.equal(questions.length, 9);
  const sky = asText(questions[0]);
  assert.equal(sky.layout, "native");
  assert.equal(sky.task, "facts");
  assert.deepEqual(sky.requests[1], {
    context: "The sky on a clear day is",
    continuation: " made of cheese",
  });
  assert.deepEqual(sky.choices, ["blue", "made of cheese"]);
  assert.equal(questions[2].task, "choice_native");
  assert.equal((questions[2] as TextChoiceQuestion).requests[0].context, "");

  const ids = questions[3];
  assert.equal(ids.kind, "ids");
  assert.equal(ids.task, "bigram");
  assert.equal(ids.file, fixture("choice_ids.jsonl"));
  assert.equal(ids.line, 1);
  assert.deepEqual(ids.requests[1], { context: [0], continuation: [5, 12] });
  assert.equal(questions[6].task, "choice_ids");
});

Deno.test("readChoiceTasks names the first malformed line", async () => {
  const path = fixture("choice_malformed.jsonl");
  const error = await readChoiceTasks([fixture("choice_piqa.jsonl"), path]).then(
    () => null,
    (e) => e,
  );
  assert.ok(error instanceof ChoiceLineError);
  assert.equal(error.path, path);
  assert.equal(error.line, 3);
  assert.equal(error.field, "choices");
  assert.match(
    error.message,
    new RegExp(`^${path.replaceAll(/[.*+?^${}()|[\]\\/]/g, "\\$&")}:3: choices: `),
  );
  assert.match(error.message, /2 more malformed lines/);
  assert.match(error.message, /--skip-invalid/);
});

Deno.test("readChoiceTasks skips malformed lines with skipInvalid", async () => {
  const { questions, invalid } = await readChoiceTasks([fixture("choice_malformed.jsonl")], {
    skipInvalid: true,
  });
  assert.deepEqual(questions.map((q) => q.line), [1, 6]);
  assert.deepEqual(invalid.map((e) => e.line), [3, 4, 5]);
  assert.equal(invalid[1].field, "");
  assert.match(invalid[1].message, /Invalid JSON/);
  assert.equal(invalid[2].field, "label");
  assert.match(invalid[2].message, /\[0, 2\), got 2/);
});

Deno.test("readChoiceTasks rejects a missing file", async () => {
  await assert.rejects(readChoiceTasks([fixture("no_such_file.jsonl")]), UsageError);
});

// one malformed line per row: line text | field named in the error | message fragment
const MALFORMED: [string, string, RegExp][] = [
  ['{"context": "c", "choices": ["a", "b"], "answer": 2}', "answer", /\[0, 2\)/],
  ['{"context": "c", "choices": ["a", ""], "answer": 0}', "choices[1]", /non-empty/],
  ['{"context": [1, 2], "choices": [[3], "b"], "answer": 0}', "choices[1]", /token ids/],
  ['{"context": [], "choices": [[3], [4]], "answer": 0}', "context", /at least one id/],
  [
    '{"context": [1, -2], "choices": [[3], [4]], "answer": 0}',
    "context[1]",
    /non-negative integer/,
  ],
  ['{"context": "c", "choices": ["a", "b"], "answer": 0, "task": ""}', "task", /non-empty/],
  [
    '{"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}',
    "answerKey",
    /not one of the labels A, B/,
  ],
  ['{"ctx": "c", "endings": ["a", "b"], "label": ""}', "label", /unlabeled test split/],
  [
    '{"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"}',
    "sentence",
    /blank/,
  ],
  ['{"sentence": "a _ b", "option1": "x", "option2": "y", "answer": "3"}', "answer", /"1" or "2"/],
  ['{"prompt": "p", "completion": "c"}', "", /Unknown layout with fields prompt, completion/],
  ["[1, 2, 3]", "", /JSON object/],
];

Deno.test("parseChoiceTasks rejects each malformed field", () => {
  for (const [line, field, message] of MALFORMED) {
    const error = (() => {
      try {
        parseChoiceTasks(line, "t.jsonl");
      } catch (e) {
        return e;
      }
    })();
    assert.ok(error instanceof ChoiceLineError, line);
    assert.equal(error.field, field, line);
    assert.match(error.message, message, line);
    assert.ok(error.message.startsWith("t.jsonl:1: "), error.message);
  }
});

Deno.test("hellaswagClean removes bracketed markers", () => {
  // whitespace is stripped before the markers go, so a leading marker leaves a space
  assert.equal(hellaswagClean(" [header] How to x [title] Do y. "), " How to x. Do y.");
  assert.equal(hellaswagClean("a [substeps] b [step]"), "a b ");
});
