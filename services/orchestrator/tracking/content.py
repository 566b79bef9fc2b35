"""What a run shows in MLflow, read from Postgres: its experiment, params (the spec, flattened),
tags, metrics by (name, step = iteration) and, once it has ended, its status. Plain data, no MLflow
calls (services/orchestrator/tracking/sender.py sends it)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import Iteration, Metric, Run, Sample
from shared.names import TERMINAL_RUN_STATUSES, IterationStatus, RunStatus

# MLflow's limits (mlflow/utils/validation.py): longer values are refused, so they are cut.
MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")

# `gold eval`'s runs (gold/evaluation): named {spec}[-b{budget}]-{mode}-r{repeat} and submitted under
# an Idempotency-Key that is a hash of the exact spec (gold/evaluation/resumable_runs.py).
EVAL_NAME = re.compile(
    r"^(?P<spec>.+?)(?:-b(?P<budget>\d+))?-(?P<mode>gold|vanilla|baselines)-r(?P<repeat>\d+)$"
)
EVAL_KEY = re.compile(r"^gold-eval-(?P<hash>[0-9a-f]+)(?:-retry(?P<retry>\d+))?$")

MLFLOW_STATUS = {
    RunStatus.SUCCEEDED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELLED: "KILLED",
}


@dataclass(frozen=True)
class Point:
    name: str
    step: int
    value: float
    timestamp_ms: int

    @property
    def key(self) -> str:
        """What `logged` keys a point by: a point is sent once per (name, step), again only if
        the step was re-run and stored another value."""
        return f"{self.name}@{self.step}"


@dataclass
class RunContent:
    experiment: str
    run_name: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    start_ms: int
    end_ms: int | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[Point] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.status != "RUNNING"


def _ms(when: Any) -> int:
    return int(when.timestamp() * 1000)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """{"loop": {"iterations": 2}} -> {"loop.iterations": "2"}: MLflow params are flat strings. Lists
    and the values of free-form maps are JSON; keys MLflow would refuse are cleaned, long values cut."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for key, item in value.items():
            name = _BAD_KEY_CHARS.sub("_", str(key))
            out.update(flatten(item, f"{prefix}.{name}" if prefix else name))
        return out
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_PARAM_VALUE:
        text = text[: MAX_PARAM_VALUE - 1] + "…"
    return {prefix[:MAX_PARAM_KEY]: text}


def experiment_name(run: Run, default: str) -> str:
    """The runs of one `gold eval` of one spec share an experiment ("gold eval: sst2"), its modes,
    repeats and budgets told apart by tags; any other run goes to the configured experiment."""
    found = EVAL_NAME.match(run.name)
    if found and run.idempotency_key and EVAL_KEY.match(run.idempotency_key):
        return f"gold eval: {found['spec']}"
    return default


def run_tags(run: Run) -> dict[str, str]:
    spec = run.spec
    loop = spec.get("loop") or {}
    iterations = loop.get("iterations")
    tags = {
        "mlflow.runName": run.name,
        "mlflow.source.name": "gold",
        "gold.run_id": str(run.id),
        "gold.status": run.status,
        "gold.task_type": (spec.get("task") or {}).get("type", ""),
        "gold.teacher": (spec.get("teacher") or {}).get("model", "default"),
        "gold.student": (spec.get("student") or {}).get("model", "default"),
        "gold.mode": "baselines"
        if iterations == 0
        else ("gold" if loop.get("feedback", True) else "vanilla"),
    }
    if run.owner:
        tags["gold.owner"] = tags["mlflow.user"] = run.owner
    if run.error:
        tags["gold.error"] = run.error[:MAX_TAG_VALUE]
    found = EVAL_NAME.match(run.name)
    key = EVAL_KEY.match(run.idempotency_key or "")
    if found and key:
        tags |= {"gold.eval.spec": found["spec"], "gold.eval.repeat": found["repeat"]}
        tags |= {"gold.eval.mode": found["mode"], "gold.eval.spec_hash": key["hash"]}
        if found["budget"]:
            tags["gold.eval.budget"] = found["budget"]
    return tags


def iteration_points(session: Session, run: Run) -> list[Point]:
    """Every metric row (the students' scores on real and held-out generated data, training loss,
    the loop's diagnostics: label agreement, diversity, ...) at step = its iteration, and what the
    iteration rows and samples hold: seconds per stage, samples kept and fed back, parse yield, the
    OOD energy band the feedback was picked from. Those are sent once the iteration has closed: they
    grow while it runs (fed_back is 0 until its select step; the diversity metrics are measured
    again once the OOD batch joins), and a step holds one point a name."""
    running = set(
        session.scalars(
            select(Iteration.index).where(
                Iteration.run_id == run.id, Iteration.status == IterationStatus.RUNNING
            )
        )
    )
    points = [
        Point(m.name, m.iteration, m.value, _ms(m.created_at))
        for m in session.scalars(select(Metric).where(Metric.run_id == run.id))
        if m.iteration not in running
    ]
    counts = _counts_by_iteration(session, run)
    band = (run.spec.get("loop") or {}).get("selection_band", [0.5, 0.8])
    energies = _energies_by_iteration(session, run)
    totals: dict[str, float] = defaultdict(float)
    closed = select(Iteration).where(Iteration.run_id == run.id, Iteration.status != IterationStatus.RUNNING)
    for it in session.scalars(closed):
        at = _ms(it.finished_at or it.started_at or it.created_at)
        values: dict[str, float] = {}
        for stage, seconds in (it.timings or {}).items():
            values[f"time_{stage}"] = seconds
            totals[f"time_total_{stage}"] += seconds
        for kind, stats in (it.parse_stats or {}).items():
            if isinstance(stats, dict) and stats.get("requested"):
                values[f"parse_yield_{kind}"] = stats.get("accepted", 0) / stats["requested"]
        for kind, n in counts.get(it.index, {}).items():
            values["fed_back" if kind == "selected" else f"samples_{kind}"] = n
        train, ood = energies.get((it.index, "train"), []), energies.get((it.index, "ood"), [])
        if ood:
            low, high = np.quantile(ood, band)
            values |= {"energy_band_low": float(low), "energy_band_high": float(high)}
            values["energy_ood_mean"] = float(np.mean(ood))
        if train:
            values["energy_train_mean"] = float(np.mean(train))
        points += [Point(name, it.index, value, at) for name, value in values.items()]
    if run.status in TERMINAL_RUN_STATUSES:
        # Sent when the run ends (they grow while it runs), at the iteration it ended at: a run that
        # failed, was resumed and ended again gets a point at each end rather than two at one step.
        end = _ms(run.finished_at or run.updated_at)
        points += [Point(name, run.iteration, value, end) for name, value in totals.items()]
        points += _final_points(points, run)
    return points


def _final_points(points: list[Point], run: Run) -> list[Point]:
    """The last student's metrics (the final student's when trained) as final_*, and the run's wall time."""
    loop_iterations = int((run.spec.get("loop") or {}).get("iterations", 0))
    student = [
        p for p in points if 1 <= p.step <= loop_iterations + 1 and p.name.startswith(("eval_", "holdout_"))
    ]
    out = []
    if student:
        last = max(p.step for p in student)
        out = [
            Point(f"final_{p.name}", run.iteration, p.value, p.timestamp_ms)
            for p in student
            if p.step == last
        ]
    if run.started_at and run.finished_at:
        seconds = (run.finished_at - run.started_at).total_seconds()
        out.append(Point("run_seconds", run.iteration, seconds, _ms(run.finished_at)))
    return out


def _counts_by_iteration(session: Session, run: Run) -> dict[int, dict[str, int]]:
    rows = session.execute(
        select(Sample.iteration, Sample.kind, Sample.holdout, Sample.selected).where(Sample.run_id == run.id)
    )
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for iteration, kind, holdout, selected in rows:
        counts[iteration][kind] += 1
        counts[iteration]["holdout"] += int(holdout)
        counts[iteration]["selected"] += int(selected)
    return {i: dict(c) for i, c in counts.items() if i > 0}


def _energies_by_iteration(session: Session, run: Run) -> dict[tuple[int, str], list[float]]:
    rows = session.execute(
        select(Sample.iteration, Sample.kind, Sample.energy).where(
            Sample.run_id == run.id, Sample.energy.is_not(None)
        )
    )
    out: dict[tuple[int, str], list[float]] = defaultdict(list)
    for iteration, kind, energy in rows:
        if energy is not None:  # filtered in the query; said again for the type checker
            out[(iteration, kind)].append(energy)
    return out


def run_content(session: Session, run: Run, default_experiment: str) -> RunContent:
    return RunContent(
        experiment=experiment_name(run, default_experiment),
        run_name=run.name,
        status=MLFLOW_STATUS.get(RunStatus(run.status), "RUNNING"),
        start_ms=_ms(run.started_at or run.created_at),
        end_ms=_ms(run.finished_at) if run.finished_at else None,
        params=flatten(run.spec),
        tags=run_tags(run),
        metrics=iteration_points(session, run),
    )
