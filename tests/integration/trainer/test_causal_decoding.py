"""Batched greedy decoding of the causal student (real SmolLM2-135M-Instruct, not fine-tuned)."""

from __future__ import annotations

import pytest
import torch

from services.trainer.students import SMOLLM2, Example, Student, build_fresh
from shared.student_format import StudentFormat

pytestmark = pytest.mark.slow

QA = StudentFormat.from_task(["context", "question"], "answer", None)
EXAMPLES = [
    Example(
        fields={"context": "Paris is the capital of France.", "question": "What is the capital of France?"}
    ),
    Example(
        fields={
            "context": "The lighthouse at Point Arden was built in 1872 from granite quarried on the island.",
            "question": "When was the lighthouse built?",
        }
    ),
]


def test_batched_answers_equal_one_by_one_answers_and_stop_at_the_end_of_the_line(models_dir):
    torch.set_num_threads(2)
    model, tokenizer = build_fresh("causal", SMOLLM2, QA, seed=0, models_dir=models_dir)
    student = Student("causal", model.eval(), tokenizer, QA, max_length=128, max_target_length=24)

    def answer(examples: list[Example]) -> list[str]:
        with torch.inference_mode():
            return student.predict(student.collate(student.encode_inputs(examples), None))

    batched = answer(EXAMPLES)  # prompts of different lengths: left padding must not change an answer
    assert batched == [answer([e])[0] for e in EXAMPLES]
    assert all(a and "\n" not in a for a in batched)
    assert "Paris" in batched[0] and "1872" in batched[1]
