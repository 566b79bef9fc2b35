"""gold retrain's logic around a stand-in orchestrator (the spec and dataset a run would return),
with the real trainer on the tiny T5: the run's own recipe and the changed one, paired by run."""

from __future__ import annotations

import json

import pytest
import torch

from gold.retrain import retrain_run, summarise
from tests.support import finished_run_read, sentiment_task

ROWS = [
    ("a warm film", "positive"),
    ("a dull film", "negative"),
    ("great fun", "positive"),
    ("flat", "negative"),
]


class StandInOrchestrator:
    def __init__(self, spec: dict, rows: list[dict]):
        self.spec, self.rows = spec, rows

    def get_run(self, run_id: str):
        return finished_run_read(self.spec, status="running" if run_id == "running" else "succeeded")

    def dataset_rows(self, run_id: str) -> list[dict]:
        return self.rows


@pytest.fixture
def orchestrator(tmp_path) -> StandInOrchestrator:
    evaluation = tmp_path / "dev.jsonl"
    evaluation.write_text("".join(json.dumps({"text": t, "label_text": y}) + "\n" for t, y in ROWS))
    spec = {
        "name": "tiny",
        "task": sentiment_task(),
        "student": {"model": "tiny-t5", "kind": "seq2seq", "epochs": 1, "final_epochs": 2, "batch_size": 2},
        "evaluation": {"path": str(evaluation)},
    }
    lines = [
        {
            "text": t,
            "label": y,
            "gold_kind": "train",
            "gold_holdout": i == 3,
            "gold_excluded": False,
            "gold_teacher_probs": None,
        }
        for i, (t, y) in enumerate(ROWS)
    ]
    return StandInOrchestrator(spec, lines)


def test_the_runs_recipe_and_the_changed_one_on_the_same_data(orchestrator):
    torch.set_num_threads(1)
    first = retrain_run(orchestrator, "r1", {"student.final_epochs": 1})  # type: ignore[arg-type]
    again = retrain_run(orchestrator, "r2", {"student.final_epochs": 1})  # type: ignore[arg-type]

    assert first["metric"] == "eval_accuracy" and first["spec"] == "tiny"
    assert (first["as_run_epochs"], first["changed_epochs"]) == (2, 1)
    assert first["as_run_holdout"] in (0.0, 1.0)  # one held-out row
    assert (first["as_run"], first["changed"]) == (again["as_run"], again["changed"])  # deterministic
    summary = summarise([first, again])
    assert summary["as_run"]["values"] == [first["as_run"]] * 2
    assert summary["paired"]["n"] == 2
    assert summary["paired"]["differences"] == [first["changed"] - first["as_run"]] * 2


def test_a_change_outside_the_spec_schema_is_refused_before_training(orchestrator):
    with pytest.raises(ValueError, match="no field 'learning_rat'"):
        retrain_run(orchestrator, "r", {"student.learning_rat": 1e-3})  # type: ignore[arg-type]


def test_a_run_that_has_not_succeeded_is_refused(orchestrator):
    with pytest.raises(ValueError, match="run running is running"):
        retrain_run(orchestrator, "running", {"student.final_epochs": 1})  # type: ignore[arg-type]
