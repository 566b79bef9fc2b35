"""The field format as guided decoding sees it: one description, a regex (vLLM) and a GBNF grammar
(llama.cpp) that accept the same completions."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from services.generator.field_format import FieldFormat, FieldSlot
from services.generator.prompts import field_format, plan_generation
from shared.spec import TaskSpec, load_spec_file
from tests.unit.generator.conftest import load_capture

ROOT = Path(__file__).resolve().parents[3]
RTE_REST = FieldFormat((FieldSlot("", 10), FieldSlot("Hypothesis", 10), FieldSlot("Label", 1)))


def gbnf_as_regex(grammar: str) -> str:
    """The subset of GBNF FieldFormat.gbnf writes for plain fields (string literals, character
    classes, {m,}, *, references to rules defined below root) as a Python regex, to compare what
    both accept."""
    rules = dict(line.split(" ::= ", 1) for line in grammar.strip().split("\n"))
    token = re.compile(r'"(?:[^"\\]|\\.)*"\*?|\[[^\]]*\](?:\{\d+,\})?|\w+')

    def expand(body: str) -> str:
        out = ""
        for piece in token.findall(body):
            if piece.startswith('"'):
                literal, optional = (piece[:-1], "*") if piece.endswith("*") else (piece, "")
                escaped = re.escape(json.loads(literal))
                out += f"(?:{escaped}){optional}"
            elif piece.startswith("["):
                out += piece
            else:
                out += f"(?:{expand(rules[piece])})"
        return out

    return expand(rules["root"])


def test_the_rte_rest_renders_as_expected() -> None:
    assert RTE_REST.regex() == (
        r" [^ \t\r\n][^\n]{9,}\nHypothesis: [^ \t\r\n][^\n]{9,}\nLabel: [^ \t\r\n][^\n]{0,}\n*"
    )
    assert RTE_REST.gbnf() == (
        'root ::= field0 "\\nHypothesis:" field1 "\\nLabel:" field2 "\\n"*\n'
        'field0 ::= " " [^ \\t\\r\\n] [^\\n]{9,}\n'
        'field1 ::= " " [^ \\t\\r\\n] [^\\n]{9,}\n'
        'field2 ::= " " [^ \\t\\r\\n] [^\\n]{0,}\n'
    )


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        (" A man is walking his dog.\nHypothesis: A person is outside.\nLabel: entailment\n", True),
        (" A man is walking his dog.\nHypothesis: A person is outside.\nLabel: entailment\n\n", True),
        (" A man is walking his dog.\nLabel: entailment\n", False),  # a field missing
        (" Short.\nHypothesis: A person is outside.\nLabel: entailment\n", False),  # under 10 characters
        ("  A man is walking his dog.\nHypothesis: A person is outside.\nLabel: x\n", False),  # blank start
        # it may end where free text would: at the end of text, or a line end or more
        (" A man is walking his dog.\nHypothesis: A person is outside.\nLabel: entailment", True),
        (" A man is walking his dog.\nHypothesis: A person is outside.\nLabel: entailment\n\n\n", True),
        (" A man is walking his dog.\n\nHypothesis: A person is outside.\nLabel: x\n", False),
        (' A man: his dog.\nHypothesis: A person is "outside".\nLabel: entailment\n', True),
    ],
)
def test_the_regex_and_the_grammar_accept_the_same_texts(text: str, accepted: bool) -> None:
    assert bool(re.fullmatch(RTE_REST.regex(), text)) is accepted
    assert bool(re.fullmatch(gbnf_as_regex(RTE_REST.gbnf()), text)) is accepted


def test_a_json_field_is_a_json_object_on_one_line() -> None:
    nl4opt = FieldFormat((FieldSlot("", 10), FieldSlot("Target", 1, json_object=True)))
    grammar = nl4opt.gbnf()
    assert grammar.startswith('root ::= field0 "\\nTarget:" field1 "\\n"*\nfield0 ::= ')
    assert 'field1 ::= " " json-object' in grammar and "json-object ::= " in grammar
    assert "\n\n" not in grammar  # every rule on its line, none empty
    target = '{"objective": {"direction": "maximize", "terms": {"x": "4"}}, "constraints": []}'
    assert re.fullmatch(nl4opt.regex(), f" A bakery makes muffins.\nTarget: {target}\n")
    assert not re.fullmatch(nl4opt.regex(), " A bakery makes muffins.\nTarget: maximize 4x\n")


def test_markers_that_need_escaping_stay_literal() -> None:
    odd = FieldFormat((FieldSlot("", 1), FieldSlot('Say "hi" (a+b)\\', 1)))
    text = ' x\nSay "hi" (a+b)\\: y\n'
    assert re.fullmatch(odd.regex(), text)
    assert re.fullmatch(gbnf_as_regex(odd.gbnf()), text)


def test_the_format_of_a_planned_prompt_is_its_remaining_fields() -> None:
    task, prompts, _ = load_capture("sentiment_train")
    # classification: the label is given in the prompt, the text is the one field left
    assert field_format(task, prompts[0][0], 10) == FieldFormat((FieldSlot("", 10),))
    task, prompts, _ = load_capture("squad_train")
    rest = field_format(task, prompts[0][0], 10, task.seed_examples).slots
    assert [s.marker for s in rest][1:] == ["Question", "Answer"]
    assert [s.min_chars for s in rest] == [10, 10, 1]  # inputs at least min_chars, the output any
    assert not any(s.json_object for s in rest)
    # NL4OPT's seed targets are JSON objects: so is the target written under guided decoding
    spec = load_spec_file(ROOT / "examples/nl4opt.yaml")
    nl4opt = TaskSpec.model_validate(spec["task"])
    (plan,) = plan_generation(
        nl4opt,
        nl4opt.seed_examples,
        [],
        [None],
        mode="train",
        samples_per_prompt=4,
        max_examples=8,
        rng=random.Random(1),
    )
    assert [s.json_object for s in field_format(nl4opt, plan, 10, nl4opt.seed_examples).slots] == [
        False,
        True,
    ]


def test_structured_auto_follows_the_engine_and_the_measured_task_types() -> None:
    import dataclasses

    from services.generator.service import STRUCTURED_HELPS, use_structured
    from shared.errors import InvalidInput
    from shared.schemas.generation import GenerateRequest
    from tests.unit.generator.fakes import FakeEngine

    task, _, _ = load_capture("sentiment_train")
    free_only = FakeEngine()
    guided = FakeEngine()
    guided.info = dataclasses.replace(guided.info, supports_structured=True)
    auto = GenerateRequest(task=task, structured="auto")
    assert use_structured(free_only, auto) is False  # never asks an engine for what it cannot do
    assert use_structured(guided, auto) is (task.type in STRUCTURED_HELPS)
    assert use_structured(guided, GenerateRequest(task=task, structured=True)) is True
    assert use_structured(guided, GenerateRequest(task=task, structured=False)) is False
    with pytest.raises(InvalidInput) as refused:
        use_structured(free_only, GenerateRequest(task=task, structured=True))
    assert str(refused.value).startswith("structured:")
