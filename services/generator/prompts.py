"""Task-agnostic prompts: few-shot continuation in a fixed field format.

A generation prompt ends with the new example's header: for classification the label comes
first (a small base model keeps the label it is given far better than it labels its own text),
then the first input field's marker, so the model writes the fields and the parser reads them
back by their markers. A base model continues the text as it is ("raw"); an instruct model gets
the same text in its chat template ("chat", `in_chat`): everything before the new example as the
user's turn with a request to write it, the new example's opening as the start of its own turn.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.generator.field_format import FieldFormat, FieldSlot, is_json_object
from shared.spec import TaskSpec

EXAMPLE_HEADER = "Example"
# Generation stops at the end of the example: a blank line or the next example's header.
STOP = ("\n\n", f"\n{EXAMPLE_HEADER}")
# An answer is one field value, written on one line.
ANSWER_STOP = ("\n",)

OOD_INSTRUCTIONS = (
    "The new examples must be significantly different from the ones shown: a new topic, a new "
    "domain, another perspective or another writer.",
    "Each new example comes from a different source than the ones above: another subject, another "
    "setting and another kind of writer.",
    "The new examples cover topics and domains that none of the examples above covers, written from "
    "a different point of view.",
    "Every new example is unlike the examples above: change the topic, the domain and the style of "
    "the writer.",
)


def field_title(name: str) -> str:
    """The marker a field is written under: "premise" -> "Premise", "question_text" -> "Question text"."""
    return name.replace("_", " ").strip().capitalize()


def one_line(value: str) -> str:
    """Field values are written on one line: a newline would end the example early."""
    return " ".join(value.split())


def generation_order(task: TaskSpec) -> list[str]:
    """Field order in generation prompts: the label first for classification, the output last otherwise."""
    if task.type == "classification":
        return [task.output_field, *task.input_fields]
    return [*task.input_fields, task.output_field]


def titles(task: TaskSpec) -> dict[str, str]:
    names = [*task.input_fields, task.output_field]
    out = {name: field_title(name) for name in names}
    if len(set(out.values())) < len(out):  # two names with the same title: keep names verbatim
        return {name: name for name in names}
    return out


def preamble(task: TaskSpec, order: Sequence[str], ood_variant: int | None = None) -> str:
    names = titles(task)
    lines = [f"The examples below come from a dataset for this task: {one_line(task.description)}"]
    if task.type == "classification" and task.labels:
        labels = ", ".join(task.labels)
        lines.append(
            f"Every example has the fields {', '.join(names[f] for f in order)}. "
            f"{names[task.output_field]} is one of: {labels}."
        )
    else:
        lines.append(f"Every example has the fields {', '.join(names[f] for f in order)}.")
    if ood_variant is not None:
        lines.append(OOD_INSTRUCTIONS[ood_variant % len(OOD_INSTRUCTIONS)])
    return "\n".join(lines) + "\n\n"


def format_example(number: int, example: dict[str, str], order: Sequence[str], names: dict[str, str]) -> str:
    body = "\n".join(f"{names[f]}: {one_line(example.get(f, ''))}" for f in order)
    return f"{EXAMPLE_HEADER} {number}\n{body}\n\n"


@dataclass
class PlannedPrompt:
    text: str
    n: int
    label: str | None
    examples: list[int] = field(default_factory=list)  # indices into the request's examples
    feedback: list[int] = field(default_factory=list)  # indices into the request's feedback
    # Text the completion continues: the fields already written in the prompt's last example.
    given: dict[str, str] = field(default_factory=dict)
    first_field: str = ""
    variant: int | None = None
    attribute: str | None = None
    # The end of `text` the completion continues: the new example's header and given fields.
    opening: str = ""


def assign_labels(task: TaskSpec, n: int, rng: random.Random) -> list[str | None]:
    """n labels balanced over the label set (the remainder goes to randomly chosen labels)."""
    if task.type != "classification" or not task.labels:
        return [None] * n
    labels = list(task.labels)
    per_label, remainder = divmod(n, len(labels))
    extra = set(rng.sample(range(len(labels)), remainder))
    out: list[str | None] = []
    for i, label in enumerate(labels):
        out.extend([label] * (per_label + (1 if i in extra else 0)))
    return out


def _pick(count: int, limit: int, rng: random.Random) -> list[int]:
    """A random subset and order of `count` items, at most `limit` long: varied prompts, varied samples."""
    if count == 0:
        return []
    size = count if count <= 3 else rng.randint(max(3, math.ceil(0.6 * count)), count)
    return rng.sample(range(count), min(size, limit))


def plan_generation(
    task: TaskSpec,
    examples: Sequence[dict[str, str]],
    feedback: Sequence[dict[str, str]],
    labels: Sequence[str | None],
    *,
    mode: str,
    samples_per_prompt: int,
    max_examples: int,
    rng: random.Random,
    attributes: Sequence[str] = (),
    feedback_per_prompt: int = 2,
    feedback_same_label: bool = False,
) -> list[PlannedPrompt]:
    """Split the requested samples (one label each) into prompts of at most samples_per_prompt.
    OOD prompts draw an attribute each (without repeats while there are unused ones) and name it
    in the new example's header: a small base model follows a topic there far better than an
    instruction in the preamble (seen with gemma-3-270m)."""
    order = generation_order(task)
    names = titles(task)
    groups: dict[str | None, int] = {}
    for label in labels:
        groups[label] = groups.get(label, 0) + 1
    chunks: list[tuple[str | None, int]] = []
    for label, count in groups.items():
        for start in range(0, count, samples_per_prompt):
            chunks.append((label, min(samples_per_prompt, count - start)))
    rng.shuffle(chunks)

    steer = list(attributes) if mode == "ood" else []
    rng.shuffle(steer)
    prompts: list[PlannedPrompt] = []
    for k, (label, n) in enumerate(chunks):
        attribute = steer[k % len(steer)] if steer else None
        shown = _pick(len(examples), max_examples, rng)
        # Feedback samples are the point of the loop: after the examples, a few per prompt, each
        # prompt its own draw. The same handful in every prompt is copied by the teacher (distinct-2
        # of the training batch fell from 0.82 to 0.64 over three iterations with all 4 in each).
        candidates = [
            i
            for i, f in enumerate(feedback)
            if not (feedback_same_label and label is not None) or f.get(task.output_field) == label
        ]
        fed = rng.sample(candidates, min(len(candidates), feedback_per_prompt, max_examples))
        variant = rng.randrange(len(OOD_INSTRUCTIONS)) if mode == "ood" else None
        text = preamble(task, order, variant)
        number = 1
        for i in shown:
            text += format_example(number, examples[i], order, names)
            number += 1
        for i in fed:
            text += format_example(number, feedback[i], order, names)
            number += 1
        given: dict[str, str] = {}
        opening = f"{EXAMPLE_HEADER} {number}" + (f" ({one_line(attribute)})" if attribute else "") + "\n"
        if task.type == "classification":
            assert label is not None
            given[task.output_field] = label
            opening += f"{names[task.output_field]}: {label}\n"
        first = next(f for f in order if f not in given)
        opening += f"{names[first]}:"
        prompts.append(
            PlannedPrompt(
                text=text + opening,
                n=n,
                opening=opening,
                label=label,
                examples=shown,
                feedback=fed,
                given=given,
                first_field=first,
                variant=variant,
                attribute=attribute,
            )
        )
    return prompts


ATTRIBUTES_OPENING = "1."


def attributes_prompt(task: TaskSpec) -> str:
    """The start of a numbered list of subjects for the task's data, for the teacher to continue
    (it ends with ATTRIBUTES_OPENING)."""
    return (
        f"A dataset for this task: {one_line(task.description)}\n\n"
        f"Here is a list of 20 very different subjects that texts in this dataset could be about:\n"
        f"{ATTRIBUTES_OPENING}"
    )


# The user's request that closes a raw prompt's text in the chat format.
NEXT_EXAMPLE_REQUEST = "Write the next example in exactly the same format."
ANSWER_REQUEST = "Complete the last example in exactly the same format."
LIST_REQUEST = "Write the list, one subject per line."


def in_chat(text: str, opening: str, request: str, chat_prompt: Callable[[list[dict[str, str]]], str]) -> str:
    """A raw prompt as an instruct model's chat: the text before `opening` and `request` as the
    user's turn, `opening` (the new example's header and given fields) as the start of the model's
    own turn, so the completion is parsed as a raw one is."""
    assert text.endswith(opening), "the opening is the end of the prompt"
    context = text[: len(text) - len(opening)].rstrip()
    return chat_prompt([{"role": "user", "content": f"{context}\n\n{request}"}]) + opening


def parse_attributes(completion: str, cut: bool) -> list[str]:
    """The items of a numbered list continuation (" Movies\n2. Rock\n3. ..."), cleaned: markup
    and surrounding punctuation removed, 2-60 characters with a word in them; the last item is
    dropped when the completion was cut at its token limit."""
    lines = re.split(r"\n\s*\d+[.)]\s*", completion)
    items = []
    for line in lines[:-1] if cut else lines:
        item = re.sub(r"<[^>]*>", "", line.split("\n")[0]).strip(" \t-*,;:.\"'")
        if 2 <= len(item) <= 60 and re.search(r"[^\W\d_]{2}", item):  # words, not a stray "19"
            items.append(item)
    return items


def field_format(
    task: TaskSpec, plan: PlannedPrompt, min_chars: int, examples: Sequence[dict[str, str]] = ()
) -> FieldFormat:
    """The rest of the example in the field format, for guided decoding: every remaining field on
    its line under its marker, input fields at least min_chars long, a field that is a JSON object
    in every example (`examples`: those the prompts show) a JSON object."""
    names = titles(task)
    rest = [f for f in generation_order(task) if f not in plan.given]
    return FieldFormat(
        tuple(
            FieldSlot(
                marker="" if k == 0 else names[name],
                min_chars=max(min_chars, 1) if name in task.input_fields else 1,
                json_object=bool(examples) and all(is_json_object(e.get(name, "")) for e in examples),
            )
            for k, name in enumerate(rest)
        )
    )


def answer_prefix(task: TaskSpec, examples: Sequence[dict[str, str]]) -> str:
    """The shared few-shot prefix when the teacher answers inputs (classify, answer): inputs
    first, the output (label or answer) last."""
    order = [*task.input_fields, task.output_field]
    names = titles(task)
    text = preamble(task, order)
    for number, example in enumerate(examples, start=1):
        text += format_example(number, example, order, names)
    return text


def answer_prompt(task: TaskSpec, prefix: str, count: int, inputs: dict[str, str]) -> str:
    """The prefix, then the new input under the next example's header, ending at the output marker."""
    names = titles(task)
    body = "".join(f"{names[f]}: {one_line(inputs.get(f, ''))}\n" for f in task.input_fields)
    return f"{prefix}{EXAMPLE_HEADER} {count + 1}\n{body}{names[task.output_field]}:"


def chat_transcript(messages: Sequence[dict[str, str]]) -> str:
    """Chat for a model without a chat template (a base model): a plain transcript to continue."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names.get(m['role'], m['role'].title())}: {m['content'].strip()}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


# chat_transcript as a chat template, for vLLM's chat serving of a model that has none (the
# default teacher, a base model); tests/unit/generator/test_prompts.py checks that both agree.
TRANSCRIPT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for m in messages -%}"
    "{%- if not loop.first %}{{ '\\n\\n' }}{% endif -%}"
    "{{ {'system': 'System', 'user': 'User', 'assistant': 'Assistant'}.get(m['role'], m['role'] | title) }}: "
    "{{ m['content'] | trim }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif -%}"
)

# Where a transcript turn ends for a base model continuing it.
CHAT_STOP = ("\n\nUser:", "\nUser:", "\n\nSystem:")
