"""What each mode measured over the repeats, read from the runs' summaries: a gold or vanilla run's
final student, the baselines measured inside a run (teacher, student few-shot, supervised), and
gold - vanilla paired by repeat."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gold.evaluation.intervals import paired_statistics, t_interval
from gold.evaluation.loop_diagnostics import mean_diagnostics, run_diagnostics
from shared.names import (
    EVAL_SECONDS_PER_EXAMPLE,
    REFERENCE_EXAMPLES,
    STUDENT_PARAMETERS,
    TEACHER_PARAMETERS,
    TEACHER_SECONDS_PER_EXAMPLE,
    RunStatus,
    eval_metric,
    fewshot_metric,
    reference_metric,
    teacher_eval_metric,
)
from shared.schemas.runs import RunSummary
from shared.spec import stored_spec


@dataclass(frozen=True)
class BaselineMetrics:
    """Where a baseline measured inside the first student run (iteration 0) is stored."""

    headline: Callable[[str], str]  # of the task metric: accuracy -> teacher_eval_accuracy
    parameters: str
    seconds_per_example: str
    examples: str | None  # real examples trained on


BASELINE_METRICS = {
    "teacher": BaselineMetrics(teacher_eval_metric, TEACHER_PARAMETERS, TEACHER_SECONDS_PER_EXAMPLE, None),
    "student": BaselineMetrics(
        lambda task_metric: fewshot_metric(eval_metric(task_metric)),
        fewshot_metric(STUDENT_PARAMETERS),
        fewshot_metric(EVAL_SECONDS_PER_EXAMPLE),
        None,
    ),
    "supervised": BaselineMetrics(
        lambda task_metric: reference_metric(eval_metric(task_metric)),
        reference_metric(STUDENT_PARAMETERS),
        reference_metric(EVAL_SECONDS_PER_EXAMPLE),
        REFERENCE_EXAMPLES,
    ),
}


@dataclass
class ModeResult:
    mode: str
    values: list[float] = field(default_factory=list)
    value_repeats: list[int] = field(default_factory=list)  # the repeat each value comes from
    run_ids: list[str] = field(default_factory=list)
    metric: str | None = None
    parameters: float | None = None
    seconds_per_example: float | None = None
    examples: float | None = None  # the supervised reference: real labelled examples trained on
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # run_diagnostics per repeat

    def add(self, repeat: int, value: float) -> None:
        self.values.append(value)
        self.value_repeats.append(repeat)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ModeResult:
        """A mode's row of an earlier results file (`as_dict`), to add repeats to. A file written
        before `diagnostics_by_repeat` was kept holds only their mean: it counts once per value."""
        diagnostics = row.get("diagnostics_by_repeat")
        if diagnostics is None:
            diagnostics = [row["diagnostics"]] * len(row["values"]) if row.get("diagnostics") else []
        return cls(
            mode=row["mode"],
            values=list(row["values"]),
            value_repeats=list(row["value_repeats"]),
            run_ids=list(row["run_ids"]),
            metric=row.get("metric"),
            parameters=row.get("parameters"),
            seconds_per_example=row.get("seconds_per_example"),
            examples=row.get("examples"),
            diagnostics=list(diagnostics),
        )

    def as_dict(self) -> dict[str, Any]:
        """A snapshot: later repeats recorded here do not change it."""
        return {
            "mode": self.mode,
            "metric": self.metric,
            "mean": statistics.fmean(self.values) if self.values else None,
            "std": statistics.stdev(self.values) if len(self.values) > 1 else None,
            "ci95": t_interval(self.values),
            "values": list(self.values),
            "value_repeats": list(self.value_repeats),
            "repeats": len(self.values),
            "run_ids": list(self.run_ids),
            "parameters": self.parameters,
            "seconds_per_example": self.seconds_per_example,
            "examples": self.examples,
            "diagnostics": mean_diagnostics(self.diagnostics) if self.diagnostics else None,
            "diagnostics_by_repeat": list(self.diagnostics),
        }


def final_metrics(summary: RunSummary) -> dict[str, float]:
    """The metrics of the run's last student (the final one when there is one)."""
    trained = [it for it in summary.iterations if it.index >= 1 and it.metrics]
    return max(trained, key=lambda it: it.index).metrics if trained else {}


class UnmeasuredRun(RuntimeError):
    """A student run finished without its headline metric on the real evaluation data."""


def record_student(result: ModeResult, summary: RunSummary, repeat: int) -> None:
    """A gold or vanilla run's final student: its headline metric, diagnostics and costs."""
    result.run_ids.append(str(summary.run.id))
    if summary.run.status != RunStatus.SUCCEEDED:
        return
    metrics = final_metrics(summary)
    headline = eval_metric(stored_spec(summary.run.spec).headline_metric)
    if headline not in metrics:  # a repeat left out of the statistics unseen would bias them
        raise UnmeasuredRun(
            f"run {summary.run.id} ({summary.run.name}) succeeded but its student has no {headline}: "
            "it was not measured on real data (does the spec have an evaluation section?)"
        )
    result.metric = headline
    result.add(repeat, metrics[headline])
    result.diagnostics.append(run_diagnostics(summary, headline))
    result.parameters = metrics.get(STUDENT_PARAMETERS, result.parameters)
    result.seconds_per_example = metrics.get(EVAL_SECONDS_PER_EXAMPLE, result.seconds_per_example)


def record_baselines(
    results: dict[str, ModeResult], summary: RunSummary, repeat: int, measured: list[str]
) -> None:
    """The baselines a succeeded run measured at iteration 0 (teacher, student, supervised)."""
    task_metric = stored_spec(summary.run.spec).headline_metric
    baselines = next((it.metrics for it in summary.iterations if it.index == 0), {})
    for baseline in measured:
        names = BASELINE_METRICS[baseline]
        if names.headline(task_metric) not in baselines:
            continue
        row = results[baseline]
        row.metric = eval_metric(task_metric)
        row.add(repeat, baselines[names.headline(task_metric)])
        row.run_ids.append(str(summary.run.id))
        row.parameters = baselines.get(names.parameters)
        row.seconds_per_example = baselines.get(names.seconds_per_example)
        row.examples = baselines.get(names.examples) if names.examples else None


def paired_difference(gold: ModeResult, vanilla: ModeResult) -> dict[str, Any]:
    """gold - vanilla over the repeats both measured: repeat r of each shares the seeds, so the
    seed-to-seed spread cancels in the difference."""
    by_repeat = dict(zip(vanilla.value_repeats, vanilla.values, strict=True))
    measured = zip(gold.value_repeats, gold.values, strict=True)
    pairs = [(r, value - by_repeat[r]) for r, value in measured if r in by_repeat]
    return {
        "a": "gold",
        "b": "vanilla",
        "metric": gold.metric or vanilla.metric,
        **paired_statistics([d for _, d in pairs]),
        "repeats": [r for r, _ in pairs],
    }
