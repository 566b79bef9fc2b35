"""Resources of the orchestrator's public API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from shared.schemas.base import OutputModel


class RunRead(OutputModel):
    id: uuid.UUID
    name: str
    status: str
    iteration: int
    stage: str | None
    progress: float
    error: str | None
    # While a service the running step needs is down: what it waits for and since when (the run
    # fails naming it after GOLD_DEPENDENCY_PATIENCE_S); None otherwise.
    waiting_for: str | None = None
    waiting_since: datetime | None = None
    # How far the running step has got, e.g. "64 of 500 rows answered", "epoch 2 of 4"; run.progress
    # moves with it. None between steps and for the short steps that do not report.
    stage_progress: str | None = None
    # MLflow tracking (GOLD_MLFLOW_TRACKING_URI): the MLflow run this run is logged to, and while
    # the tracking server is behind (down, failing), since when and why; the run goes on meanwhile.
    mlflow_run_id: str | None = None
    tracking_lag: str | None = None
    spec: dict[str, Any]
    # Name of the API key that created the run; None when created without authentication or before
    # runs had owners (then only admin keys see it).
    owner: str | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class IterationRead(OutputModel):
    index: int
    status: str
    parse_stats: dict[str, Any]
    timings: dict[str, float]
    checkpoint_id: uuid.UUID | None
    metrics: dict[str, float] = {}
    sample_counts: dict[str, int] = {}  # train, ood, holdout, selected
    started_at: datetime | None
    finished_at: datetime | None


class SampleRead(OutputModel):
    id: uuid.UUID
    iteration: int
    kind: str
    position: int
    fields: dict[str, str]
    label: str | None
    prompt_examples: dict[str, Any]
    holdout: bool
    energy: float | None
    selected: bool
    # The teacher's check: the label the generator was asked for, the teacher's probabilities over
    # the labels, and whether the sample was left out of training for it.
    requested_label: str | None = None
    teacher_probs: dict[str, float] | None = None
    excluded: bool = False


# Filters of a run's samples (GET /runs/{id}/samples): the teacher's agreement with the requested
# label, and the order of the page.
Agreement = Literal["agrees", "disagrees", "unchecked"]
SampleOrder = Literal["position", "energy", "-energy"]


class SamplePage(OutputModel):
    items: list[SampleRead]
    total: int
    offset: int
    limit: int


class RejectionRead(OutputModel):
    """A generated completion that did not become a sample, and why."""

    iteration: int
    kind: str
    reason: str
    text: str


class RejectionPage(OutputModel):
    items: list[RejectionRead]
    total: int
    offset: int
    limit: int


class MetricRead(OutputModel):
    iteration: int
    name: str
    value: float


class RunSummary(OutputModel):
    """The final run as one JSON object (what `gold ... --json` prints last)."""

    run: RunRead
    iterations: list[IterationRead]
    sample_counts: dict[str, int]
