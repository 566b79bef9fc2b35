"""What each console page shows, read through the same service functions as the API routes (one
query path: a page never sees other data than the JSON does)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.orchestrator import service
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.failures import Failure, explain
from shared.auth import Principal
from shared.clients import GeneratorClient
from shared.db.models import Run
from shared.diagnostics import diagnostic_series
from shared.errors import GoldError
from shared.names import TERMINAL_RUN_STATUSES, Diagnostic, eval_metric, holdout_metric, teacher_eval_metric
from shared.schemas.runs import IterationRead, RejectionPage, RunRead, SamplePage
from shared.spec import RunSpec, stored_spec

RUNS_PER_PAGE = 20
SAMPLES_PER_PAGE = 50
# The bundled example specs, offered as starting points by the new-run page.
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def is_active(status: str) -> bool:
    return status not in TERMINAL_RUN_STATUSES


def duration(run: RunRead) -> str:
    if run.started_at is None:
        return ""
    seconds = int(((run.finished_at or datetime.now(UTC)) - run.started_at).total_seconds())
    return (
        f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m {seconds % 60:02d}s"
    )


def _spec(run: RunRead) -> RunSpec | None:
    try:
        return stored_spec(run.spec)
    except ValidationError:  # a spec of another GOLD version: the page still shows the run
        return None


@dataclass
class RunRow:
    run: RunRead
    task_type: str
    best: float | None  # best real-data score of the headline metric so far
    metric: str
    duration: str


@dataclass
class RunsPage:
    rows: list[RunRow]
    status: str | None
    page: int
    has_next: bool

    @property
    def active(self) -> bool:
        return any(is_active(r.run.status) for r in self.rows)


def runs_page(*, session: Session, principal: Principal, status: str | None, page: int) -> RunsPage:
    runs = service.list_runs(
        session=session,
        principal=principal,
        status=status,
        offset=page * RUNS_PER_PAGE,
        limit=RUNS_PER_PAGE + 1,
    )
    rows = []
    for run in runs[:RUNS_PER_PAGE]:
        read = RunRead.model_validate(run)
        spec = _spec(read)
        metric = spec.headline_metric if spec else ""
        scores = [
            m.value
            for m in service.run_metrics(run.id, session=session, principal=principal)
            if spec and m.name == eval_metric(metric) and m.iteration >= 1
        ]
        rows.append(
            RunRow(read, spec.task.type if spec else "?", max(scores, default=None), metric, duration(read))
        )
    return RunsPage(rows, status, page, len(runs) > RUNS_PER_PAGE)


@dataclass
class IterationRow:
    it: IterationRead
    label: str  # "1", "2", ..., "final"
    real: float | None
    held_out: float | None
    loss: float | None
    seconds: float


@dataclass
class RunPage:
    run: RunRead
    spec: RunSpec | None
    spec_yaml: str
    failure: Failure | None
    iterations: list[IterationRow]
    teacher: float | None
    charts: list[tuple[str, str]]
    time_split: list[tuple[str, float, float]]  # stage, seconds, share of the total
    sample_counts: dict[str, int]
    metric: str

    @property
    def active(self) -> bool:
        return is_active(self.run.status)

    @property
    def labels(self) -> list[str]:
        return list(self.spec.task.labels or []) if self.spec else []

    @property
    def input_fields(self) -> list[str]:
        return list(self.spec.task.input_fields) if self.spec else []


def run_page(run_id: uuid.UUID, *, session: Session, principal: Principal) -> RunPage:
    summary = service.run_summary(run_id, session=session, principal=principal)
    run, spec = summary.run, _spec(summary.run)
    metric = spec.headline_metric if spec else ""
    last = spec.loop.iterations if spec else 0
    rows = [
        IterationRow(
            it,
            str(it.index) if it.index <= last else "final",
            it.metrics.get(eval_metric(metric)),
            it.metrics.get(holdout_metric(spec.task.type)) if spec else None,
            it.metrics.get("train_loss"),
            sum(it.timings.values()),
        )
        for it in summary.iterations
        if it.index >= 1
    ]
    baseline = next((it for it in summary.iterations if it.index == 0), None)
    stages: dict[str, float] = {}
    for it in summary.iterations:
        for stage, seconds in it.timings.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    total = sum(stages.values()) or 1.0
    return RunPage(
        run=run,
        spec=spec,
        spec_yaml=yaml.safe_dump(run.spec, sort_keys=False, allow_unicode=True),
        failure=explain(run.error) if run.error else None,
        iterations=rows,
        teacher=baseline.metrics.get(teacher_eval_metric(metric)) if baseline else None,
        charts=_charts(spec, summary.iterations, summary.sample_counts),
        time_split=[(stage, s, s / total) for stage, s in sorted(stages.items(), key=lambda kv: -kv[1])],
        sample_counts=summary.sample_counts,
        metric=metric,
    )


def _charts(
    spec: RunSpec | None, iterations: list[IterationRead], counts: dict[str, int]
) -> list[tuple[str, str]]:
    """The report's charts that have data (report.CHARTS), judged from the summary alone so the page
    needs no sample rows: each is then drawn by its own image request."""
    if spec is None:
        return []
    loop = [it for it in iterations if 1 <= it.index <= spec.loop.iterations]
    measured = [it for it in iterations if it.index >= 1]
    names = (eval_metric(spec.headline_metric), holdout_metric(spec.task.type))
    charts = []
    if any(n in it.metrics for it in measured for n in names):
        charts.append(("metric", f"student {spec.headline_metric.replace('_', ' ')} per iteration"))
    if loop and counts.get("ood"):
        charts.append(("energy", "energy of training vs OOD samples, selection band marked"))
    if spec.task.labels and loop and counts.get("train"):
        charts.append(("labels", "label distribution of generated data"))
    if diagnostic_series(loop, Diagnostic.OOD_NOVELTY):
        charts.append(("ood", "is the OOD batch out of distribution?"))
    if diagnostic_series(loop, Diagnostic.DISTINCT_2) or diagnostic_series(loop, Diagnostic.EMBEDDING_SPREAD):
        charts.append(("diversity", "diversity"))
    return charts


@dataclass
class SampleFilters:
    iteration: int | None = None
    kind: str | None = None  # seed | train | ood | fed_back | rejected
    label: str | None = None
    agreement: str | None = None
    order: str = "position"
    derived_from: uuid.UUID | None = None
    page: int = 0

    def query(self, **changes: Any) -> str:
        """This filter as a query string, with `changes` (page links keep the filters)."""
        values = {**self.__dict__, **changes}
        return "&".join(
            f"{k}={v}"
            for k, v in values.items()
            if v is not None and v != "" and not (k == "page" and v == 0)
        )


@dataclass
class SamplesPage:
    run: RunRead
    spec: RunSpec | None
    filters: SampleFilters
    samples: SamplePage | None
    rejections: RejectionPage | None
    iterations: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        page = self.samples or self.rejections
        return page.total if page else 0

    @property
    def has_next(self) -> bool:
        return (self.filters.page + 1) * SAMPLES_PER_PAGE < self.total


def samples_page(
    run_id: uuid.UUID, filters: SampleFilters, *, session: Session, principal: Principal
) -> SamplesPage:
    run = RunRead.model_validate(service.get_run(run_id, session=session, principal=principal))
    offset, limit = filters.page * SAMPLES_PER_PAGE, SAMPLES_PER_PAGE
    samples = rejections = None
    if filters.kind == "rejected":
        rejections = service.list_rejections(
            run_id,
            session=session,
            principal=principal,
            iteration=filters.iteration,
            offset=offset,
            limit=limit,
        )
    else:
        samples = service.list_samples(
            run_id,
            session=session,
            principal=principal,
            iteration=filters.iteration,
            kind=None if filters.kind in (None, "fed_back") else filters.kind,
            selected=True if filters.kind == "fed_back" else None,
            label=filters.label,
            agreement=filters.agreement,  # type: ignore[arg-type]  # checked by the route
            derived_from=filters.derived_from,
            order=filters.order,  # type: ignore[arg-type]
            offset=offset,
            limit=limit,
        )
    spec = _spec(run)
    last = (spec.loop.iterations + 1) if spec else run.iteration
    return SamplesPage(run, spec, filters, samples, rejections, list(range(0, last + 1)))


def teacher_verdict(probs: dict[str, float] | None, requested: str | None) -> tuple[str, str]:
    """The teacher's label and its agreement with the requested one, in words."""
    if not probs:
        return "-", "not checked"
    best = max(probs, key=probs.__getitem__)
    if requested is None:
        return f"{best} ({probs[best]:.2f})", "-"
    agrees = probs.get(requested, 0.0) >= probs[best]
    return f"{best} ({probs[best]:.2f})", "agrees" if agrees else "disagrees"


@dataclass
class NewRunForm:
    text: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)  # (field path, message)
    examples: list[str] = field(default_factory=list)


def examples() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.yaml")) if EXAMPLES.is_dir() else []


def example_text(name: str) -> str:
    path = EXAMPLES / f"{name}.yaml"
    if name not in examples():
        return ""
    return path.read_text()


def submit_run(
    text: str,
    *,
    session: Session,
    settings: OrchestratorSettings,
    principal: Principal,
    generator: GeneratorClient,
) -> Run | list[tuple[str, str]]:
    """The run the YAML spec creates, as POST /runs creates it, or its problems as (field, message)
    with the messages POST /runs answers with in its 422."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [("spec", f"not valid YAML: {exc}")]
    if not isinstance(data, dict):
        return [("spec", "a run spec is a YAML mapping (name:, task:, ...)")]
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as exc:
        return [_field_error(e["loc"], e["msg"]) for e in exc.errors()]
    try:
        return service.create_run(
            spec, session=session, settings=settings, principal=principal, generator=generator
        )
    except GoldError as exc:
        if isinstance(exc.detail, list):
            return [(".".join(str(p) for p in d["loc"]), d["msg"]) for d in exc.detail]
        return [("spec", exc.message)]


_NAMED_FIELD = re.compile(r"^Value error, ([a-z_]+(?:\.[a-z_]+)+): (.*)$", re.DOTALL)


def _field_error(loc: tuple[int | str, ...], message: str) -> tuple[str, str]:
    """(field, message) as POST /runs's 422 names them; a check of the whole spec names its field
    at the head of the message ("loop.iterations: ..."), which is then the field."""
    if not loc and (named := _NAMED_FIELD.match(message)):
        return named.group(1), named.group(2)
    return ".".join(str(p) for p in loc) or "spec", message


@dataclass
class ComparePage:
    runs: list[RunPage]
    run_ids: list[uuid.UUID]


def compare_page(run_ids: list[uuid.UUID], *, session: Session, principal: Principal) -> ComparePage:
    return ComparePage([run_page(r, session=session, principal=principal) for r in run_ids], run_ids)
