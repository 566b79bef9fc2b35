"""The start check's logic (start_check.py): which first answers count as degenerate, and that a
failing engine is named in the error. The check against a real packaged teacher is in
tests/integration/generator/test_llamacpp.py."""

from __future__ import annotations

import asyncio

import pytest

from services.generator.model_store import ModelError
from services.generator.start_check import check_generation, degenerate
from tests.unit.generator.fakes import FakeEngine


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "nothing"),
        ("   \n ", "nothing"),
        (" the the the the the", "one word"),
        ("!!!!!!!!!!!!", "one character"),
        ("\x00\x01\x02\x03\x04 ab", "unprintable"),
    ],
)
def test_degenerate_answers_are_named(text: str, why: str) -> None:
    reason = degenerate(text)
    assert reason is not None and why in reason


@pytest.mark.parametrize("text", [" Blue", " Blue.\n", " It is blue, mostly.", " 蓝色"])
def test_answers_that_are_text_pass(text: str) -> None:
    assert degenerate(text) is None


def test_a_degenerate_engine_fails_with_its_model_and_the_answer() -> None:
    engine = FakeEngine(script=lambda prompt, sampling, j: "")
    with pytest.raises(ModelError, match=r"fake/model \(default\) failed its start check: .*wrote nothing"):
        asyncio.run(check_generation(engine))
    ((prompts, sampling),) = engine.calls
    assert prompts[0].endswith("Answer:") and sampling[0].temperature == 0.0


def test_a_talking_engine_passes() -> None:
    asyncio.run(check_generation(FakeEngine()))
