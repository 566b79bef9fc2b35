import uuid
from datetime import UTC, datetime

import pytest

from gold.evaluate import evaluate, mode_spec, parse_modes
from shared.schemas.runs import IterationRead, RunRead, RunSummary
from tests.support import SENTIMENT_TASK

TASK = SENTIMENT_TASK
SPEC = {
    "name": "s",
    "task": TASK,
    "teacher": {"seed": 3},
    "loop": {"iterations": 1},
    "evaluation": {"path": "x", "reference_path": "real.jsonl"},
}


def summary(spec, accuracy, teacher=None, supervised=None, metric="accuracy") -> RunSummary:
    now = datetime.now(UTC)
    its = [
        IterationRead(
            index=2,
            status="done",
            parse_stats={},
            timings={},
            checkpoint_id=None,
            metrics={f"eval_{metric}": accuracy, "eval_exact_match": 0.0, "student_parameters": 22e6},
            started_at=now,
            finished_at=now,
        )
    ]
    baselines = {}
    if teacher is not None:
        baselines[f"teacher_eval_{metric}"] = teacher
    if supervised is not None:
        baselines.update({f"reference_eval_{metric}": supervised, "reference_examples": 64.0})
    if baselines:
        its.insert(
            0,
            IterationRead(
                index=0,
                status="done",
                parse_stats={},
                timings={},
                checkpoint_id=None,
                metrics=baselines,
                started_at=now,
                finished_at=now,
            ),
        )
    run = RunRead(
        id=uuid.uuid4(),
        name=spec["name"],
        status="succeeded",
        iteration=2,
        stage="done",
        progress=1.0,
        error=None,
        spec=spec,
        created_at=now,
        started_at=now,
        finished_at=now,
    )
    return RunSummary(run=run, iterations=its, sample_counts={})


def test_mode_spec_switches_feedback_and_shifts_seeds_per_repeat():
    gold = mode_spec(SPEC, "gold", 2, measure_teacher=False)
    vanilla = mode_spec(SPEC, "vanilla", 2, measure_teacher=True)
    assert gold["loop"]["feedback"] is True and vanilla["loop"]["feedback"] is False
    assert gold["teacher"]["seed"] == vanilla["teacher"]["seed"] == 5
    assert gold["student"]["seed"] == 46
    assert (
        vanilla["evaluation"]["teacher_baseline"] is True and gold["evaluation"]["teacher_baseline"] is False
    )
    assert "reference_path" not in gold["evaluation"]  # the supervised reference is not asked for
    assert mode_spec(SPEC, "gold", 0, False, measure_supervised=True)["evaluation"]["reference_path"]
    assert SPEC["loop"] == {"iterations": 1}  # the input is not modified


def test_evaluate_aggregates_repeats_and_measures_the_teacher_once():
    submitted = []

    def run(spec):
        submitted.append(spec)
        gold = spec["loop"]["feedback"]
        return summary(
            spec, 0.8 if gold else 0.7, teacher=0.75 if spec["evaluation"]["teacher_baseline"] else None
        )

    result = evaluate(SPEC, ["gold", "vanilla", "teacher"], 2, run)
    by_mode = {m["mode"]: m for m in result["modes"]}
    assert len(submitted) == 4
    assert sum(s["evaluation"]["teacher_baseline"] for s in submitted) == 1
    assert not any("reference_path" in s["evaluation"] for s in submitted)  # "supervised" not asked
    assert by_mode["gold"]["mean"] == pytest.approx(0.8) and by_mode["gold"]["repeats"] == 2
    assert by_mode["vanilla"]["mean"] == pytest.approx(0.7)
    assert by_mode["teacher"]["values"] == [0.75]
    assert by_mode["gold"]["parameters"] == 22e6


def test_the_headline_is_the_spec_metric_for_students_and_teacher_alike():
    spec = {
        **SPEC,
        "task": {**TASK, "type": "seq2seq", "labels": None},
        "evaluation": {"path": "x", "metric": "rouge_l"},
    }
    result = evaluate(spec, ["gold", "teacher"], 1, lambda s: summary(s, 0.4, teacher=0.3, metric="rouge_l"))
    by_mode = {m["mode"]: m for m in result["modes"]}
    assert by_mode["gold"]["metric"] == by_mode["teacher"]["metric"] == "eval_rouge_l"
    assert by_mode["gold"]["mean"] == 0.4 and by_mode["teacher"]["mean"] == 0.3


def test_parse_modes_rejects_unknown_and_teacher_alone():
    with pytest.raises(ValueError, match="unknown"):
        parse_modes("gold,zerogen")
    with pytest.raises(ValueError, match="teacher"):
        parse_modes("teacher")
    with pytest.raises(ValueError, match="supervised"):
        parse_modes("teacher,supervised")


def test_budget_spec_keeps_iterations_and_ood_share():
    from gold.evaluate import budget_spec

    spec = {
        "name": "s",
        "loop": {
            "iterations": 4,
            "samples_per_iteration": 48,
            "ood_samples_per_iteration": 16,
            "feedback_per_iteration": 4,
        },
    }
    scaled = budget_spec(spec, 1024)
    assert scaled["loop"]["samples_per_iteration"] + scaled["loop"]["ood_samples_per_iteration"] == 256
    assert scaled["loop"]["ood_samples_per_iteration"] == 64 and scaled["loop"]["iterations"] == 4
    small = budget_spec(spec, 16)
    assert small["loop"]["ood_samples_per_iteration"] == 1 and small["loop"]["feedback_per_iteration"] == 1


def test_sweep_measures_the_teacher_once_and_plots(tmp_path):
    from gold.evaluate import sweep, sweep_plot

    def run(spec):
        budget = int(spec["name"].split("-b")[1].split("-")[0])
        return summary(
            spec,
            budget / 1000,
            teacher=0.9 if spec["evaluation"]["teacher_baseline"] else None,
            supervised=budget / 500 if "reference_path" in spec["evaluation"] else None,
        )

    result = sweep(SPEC, ["gold", "vanilla", "teacher", "supervised"], 1, [64, 256], run)
    assert [p["budget"] for p in result["points"]] == [64, 256]

    def means(mode):
        return [next(m for m in p["modes"] if m["mode"] == mode)["mean"] for p in result["points"]]

    assert means("gold") == [0.064, 0.256]
    assert means("supervised") == [0.128, 0.512]  # measured at every budget, inside the gold run
    assert sweep_plot(result, tmp_path / "s.png").stat().st_size > 1000
