"""Prompt building: label-first few-shot continuation, balanced labels, varied in-context examples."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from services.generator.prompts import (
    ANSWER_REQUEST,
    ATTRIBUTES_OPENING,
    LIST_REQUEST,
    NEXT_EXAMPLE_REQUEST,
    OOD_INSTRUCTIONS,
    TRANSCRIPT_TEMPLATE,
    answer_prefix,
    answer_prompt,
    assign_labels,
    attributes_prompt,
    chat_transcript,
    field_format,
    in_chat,
    parse_attributes,
    plan_generation,
)
from services.generator.service import answer_prompt_for
from shared.spec import TaskSpec
from tests.support import sentiment_task
from tests.unit.generator.conftest import load_capture
from tests.unit.generator.fakes import FakeEngine

# Eight short seeds: enough for prompts to show different subsets of the in-context examples.
SENTIMENT = TaskSpec.model_validate(
    sentiment_task(
        seed_examples=[
            {
                "text": f"Review number {i} of a film, {'loved' if i % 2 else 'hated'} it.",
                "label": "positive" if i % 2 else "negative",
            }
            for i in range(8)
        ]
    )
)
QA = TaskSpec(
    type="seq2seq",
    description="Answer a question about a passage with a span of the passage.",
    input_fields=["context", "question"],
    output_field="answer",
    seed_examples=[
        {
            "context": "The bridge opened in 1932 after six years of work.",
            "question": "When did it open?",
            "answer": "1932",
        },
        {
            "context": "Ada kept bees on the roof of the library.",
            "question": "Where were the bees?",
            "answer": "on the roof of the library",
        },
    ],
)


def test_labels_are_balanced_and_cover_the_batch() -> None:
    labels = assign_labels(SENTIMENT, 48, random.Random(0))
    assert Counter(labels) == {"negative": 24, "positive": 24}
    odd = Counter(
        assign_labels(SENTIMENT.model_copy(update={"labels": ["a", "b", "c"]}), 16, random.Random(1))
    )
    assert sorted(odd.values()) == [5, 5, 6]


def test_generation_prompt_gives_the_label_first_and_ends_at_the_first_text_field() -> None:
    rng = random.Random(3)
    plans = plan_generation(
        SENTIMENT,
        SENTIMENT.seed_examples,
        [],
        assign_labels(SENTIMENT, 48, rng),
        mode="train",
        samples_per_prompt=4,
        max_examples=8,
        rng=rng,
    )
    assert sum(p.n for p in plans) == 48 and all(p.n <= 4 for p in plans)
    for plan in plans:
        tail = plan.text.rsplit("Example ", 1)[1]
        number = len(plan.examples) + len(plan.feedback) + 1
        assert tail == f"{number}\nLabel: {plan.label}\nText:"
        assert plan.given == {"label": plan.label} and plan.first_field == "text"
        assert not any(instruction in plan.text for instruction in OOD_INSTRUCTIONS)
        for i in plan.examples:  # the examples it claims to show are the ones it shows
            assert f"Text: {SENTIMENT.seed_examples[i]['text']}" in plan.text
    # Diversity of prompts: subsets and orders differ between prompts.
    assert len({tuple(p.examples) for p in plans}) >= len(plans) - 2
    assert Counter(p.label for p in plans for _ in range(p.n)) == {"negative": 24, "positive": 24}


def test_feedback_of_the_requested_label_only_when_asked() -> None:
    feedback = [
        {"text": f"Fed back {i}.", "label": label}
        for i, label in enumerate(["negative", "positive", "positive", "positive"])
    ]

    def shown(same_label: bool) -> set[tuple[str, str]]:
        rng = random.Random(7)
        plans = plan_generation(
            SENTIMENT,
            SENTIMENT.seed_examples,
            feedback,
            assign_labels(SENTIMENT, 32, rng),
            mode="train",
            samples_per_prompt=4,
            max_examples=8,
            rng=rng,
            feedback_same_label=same_label,
        )
        return {(str(p.label), feedback[i]["label"]) for p in plans for i in p.feedback}

    assert shown(True) == {("negative", "negative"), ("positive", "positive")}
    assert ("negative", "positive") in shown(False)


def test_feedback_follows_the_examples_and_ood_adds_the_difference_instruction() -> None:
    feedback = [{"text": "A sample fed back from the previous iteration.", "label": "negative"}]
    rng = random.Random(5)
    plans = plan_generation(
        SENTIMENT,
        SENTIMENT.seed_examples[:3],
        feedback,
        ["positive"] * 8,
        mode="ood",
        samples_per_prompt=4,
        max_examples=8,
        rng=rng,
    )
    for plan in plans:
        assert plan.feedback == [0]
        assert plan.text.index("A sample fed back") > max(
            plan.text.index(SENTIMENT.seed_examples[i]["text"]) for i in plan.examples
        )
        assert any(instruction in plan.text for instruction in OOD_INSTRUCTIONS)


def test_seq2seq_prompt_writes_inputs_then_output() -> None:
    rng = random.Random(0)
    plans = plan_generation(
        QA,
        QA.seed_examples,
        [],
        assign_labels(QA, 4, rng),
        mode="train",
        samples_per_prompt=4,
        max_examples=8,
        rng=rng,
    )
    assert len(plans) == 1 and plans[0].label is None and plans[0].given == {}
    assert plans[0].text.endswith("Example 3\nContext:")
    assert (
        "Context: The bridge opened in 1932 after six years of work.\n"
        "Question: When did it open?\nAnswer: 1932" in plans[0].text
    )


def test_classification_prompt_shares_one_prefix_and_asks_for_the_label_last() -> None:
    prefix = answer_prefix(SENTIMENT, SENTIMENT.seed_examples)
    prompt = answer_prompt(SENTIMENT, prefix, 8, {"text": "Multi\nline input"})
    assert prompt.startswith(prefix)
    assert prompt.endswith("Example 9\nText: Multi line input\nLabel:")


def test_captured_prompts_match_the_current_prompt_builder() -> None:
    """The fixtures hold real completions of these exact prompts: if the format changes, the
    fixtures must be captured again (tests/fixtures/generator/capture.py)."""
    for name in ("sentiment_train", "sentiment_ood", "rte_train", "squad_train"):
        task, prompts, record = load_capture(name)
        rng = random.Random(7)
        plans = plan_generation(
            task,
            task.seed_examples,
            [],
            assign_labels(task, record["n"], rng),
            mode=record["mode"],
            samples_per_prompt=4,
            max_examples=8,
            rng=rng,
        )
        assert [p.text for p in plans] == [p.text for p, _ in prompts], name


def test_field_format_regex_accepts_the_real_well_formed_completions_only() -> None:
    import re

    from services.generator.parsing import Candidate, Limits, parse_completion
    from services.generator.prompts import generation_order, titles

    for name in ("sentiment_train", "rte_train", "squad_train"):
        task, prompts, _ = load_capture(name)
        for plan, completions in prompts:
            pattern = re.compile(field_format(task, plan, 10).regex())
            rest = [f for f in generation_order(task) if f not in plan.given]
            for c in completions:
                sample = parse_completion(task, plan, c["text"], c["finish_reason"], Limits())
                if isinstance(sample, Candidate):  # the fields as the parser read them, in the format
                    text = "".join(
                        (" " if k == 0 else f"\n{titles(task)[f]}: ") + sample.fields[f]
                        for k, f in enumerate(rest)
                    )
                    assert pattern.fullmatch(text + "\n"), (name, text)
    task, prompts, _ = load_capture("rte_train")
    pattern = re.compile(field_format(task, prompts[0][0], 10).regex())
    assert not pattern.fullmatch(" A premise that is long enough.\nLabel: entailment\n")  # a field is missing
    assert not pattern.fullmatch(" Short\nHypothesis: Something long enough here.\n")  # under 10 characters


def test_ood_prompts_are_steered_by_one_attribute_each_in_the_new_example_header() -> None:
    attributes = ["jazz documentaries", "war films", "a teenager's blog"]
    plans = plan_generation(
        SENTIMENT,
        SENTIMENT.seed_examples[:3],
        [],
        ["positive"] * 12,
        mode="ood",
        samples_per_prompt=4,
        max_examples=8,
        rng=random.Random(1),
        attributes=attributes,
    )
    # three prompts, three different attributes (no repeat while unused ones remain)
    assert sorted(p.attribute for p in plans) == sorted(attributes)
    for plan in plans:
        assert plan.text.endswith(f"Example 4 ({plan.attribute})\nLabel: positive\nText:")
    train = plan_generation(
        SENTIMENT, SENTIMENT.seed_examples[:3], [], ["positive"] * 4, mode="train",
        samples_per_prompt=4, max_examples=8, rng=random.Random(1), attributes=attributes,
    )  # fmt: skip
    assert train[0].attribute is None and "(" not in train[0].text.splitlines()[-3]


def test_attribute_lists_are_parsed_from_the_teachers_numbered_continuation() -> None:
    # real gemma-3-270m continuations of the attribute prompt
    assert parse_attributes(" Movies\n2. Rock\n3. Sports\n4. <i>Technology</i>,\n19\n5. Anim", cut=True) == [
        "Movies", "Rock", "Sports", "Technology",
    ]  # fmt: skip
    assert parse_attributes(" violence,\n2. injustice,\n3. war", cut=False) == [
        "violence",
        "injustice",
        "war",
    ]
    assert parse_attributes(" 19\n2. x\n3. 2016", cut=False) == []


def test_each_training_prompt_shows_its_own_few_feedback_samples() -> None:
    feedback = [{"text": f"Fed-back sample number {i}.", "label": "negative"} for i in range(4)]
    plans = plan_generation(
        SENTIMENT,
        SENTIMENT.seed_examples,
        feedback,
        ["negative"] * 24,
        mode="train",
        samples_per_prompt=4,
        max_examples=8,
        rng=random.Random(3),
        feedback_per_prompt=2,
    )
    assert all(len(p.feedback) == 2 for p in plans)
    assert len({tuple(sorted(p.feedback)) for p in plans}) > 1  # not the same pair everywhere
    assert {i for p in plans for i in p.feedback} == {0, 1, 2, 3}  # every sample is shown somewhere


def test_transcript_template_renders_what_chat_transcript_writes() -> None:
    import jinja2

    messages = [
        {"role": "system", "content": "Be brief. "},
        {"role": "user", "content": " Name a colour."},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Another?"},
    ]
    template = jinja2.Environment().from_string(TRANSCRIPT_TEMPLATE)
    rendered = template.render(messages=messages, bos_token="<bos>", add_generation_prompt=True)
    assert rendered == "<bos>" + chat_transcript(messages)


def test_an_instruct_teacher_gets_the_same_prompt_in_its_chat_template() -> None:
    (plan,) = plan_generation(
        SENTIMENT, SENTIMENT.seed_examples[:3], [], ["negative"] * 2, mode="train",
        samples_per_prompt=4, max_examples=8, rng=random.Random(2),
    )  # fmt: skip
    assert plan.opening == "Example 4\nLabel: negative\nText:" and plan.text.endswith(plan.opening)
    turns: list[list[dict[str, str]]] = []

    def template(messages: list[dict[str, str]]) -> str:
        turns.append(messages)
        return "<user>" + messages[0]["content"] + "</user><assistant>"

    chat = in_chat(plan.text, plan.opening, NEXT_EXAMPLE_REQUEST, template)
    # the examples and a request are the user's turn; the new example opens the model's turn
    (user,) = turns[0]
    assert user["role"] == "user" and user["content"].endswith("it.\n\n" + NEXT_EXAMPLE_REQUEST)
    assert "Example 3\n" in user["content"] and "Example 4" not in user["content"]
    assert chat.endswith("</user><assistant>Example 4\nLabel: negative\nText:")
    listing = in_chat(attributes_prompt(SENTIMENT), ATTRIBUTES_OPENING, LIST_REQUEST, template)
    assert listing.endswith("could be about:\n\n" + LIST_REQUEST + "</user><assistant>1.")


def test_classify_and_answer_prompts_follow_the_teachers_prompt_format() -> None:
    """The few-shot examples as the user's turn, the new input under its header opening the model's
    turn, ending at the output marker whose continuation is scored (classify) or read (answer)."""
    engine = FakeEngine()
    prefix = answer_prefix(QA, QA.seed_examples)
    question = {"context": "Rain fell all week.", "question": "What fell?"}
    raw = answer_prompt_for(engine, QA, prefix, 2, question)
    assert raw == answer_prompt(QA, prefix, 2, question)
    engine.info = dataclasses.replace(
        engine.info, model=dataclasses.replace(engine.info.model, prompt_format="chat")
    )
    chat = answer_prompt_for(engine, QA, prefix, 2, question)
    assert (
        chat
        == chat_transcript([{"role": "user", "content": prefix.rstrip() + "\n\n" + ANSWER_REQUEST}])
        + raw[len(prefix) :]
    )
    assert chat.endswith("Assistant:Example 3\nContext: Rain fell all week.\nQuestion: What fell?\nAnswer:")
