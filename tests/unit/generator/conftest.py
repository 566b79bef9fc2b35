from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.generator.prompts import PlannedPrompt
from shared.spec import TaskSpec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "generator"


def load_capture(name: str) -> tuple[TaskSpec, list[tuple[PlannedPrompt, list[dict]]], dict]:
    """A captured real-model case: its task, and each prompt as planned with its completions."""
    record = json.loads((FIXTURES / f"{name}.json").read_text())
    task = TaskSpec.model_validate(record["task"])
    prompts = []
    for entry in record["prompts"]:
        completions = entry.pop("completions")
        prompts.append((PlannedPrompt(**entry), completions))
    return task, prompts, record


@pytest.fixture(params=["sentiment_train", "sentiment_ood", "rte_train", "squad_train"])
def capture(request: pytest.FixtureRequest) -> tuple[TaskSpec, list[tuple[PlannedPrompt, list[dict]]], dict]:
    return load_capture(request.param)
