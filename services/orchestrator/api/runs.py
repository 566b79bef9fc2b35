"""Public run resources. Routes parse, take dependencies, call one service function."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, status

from services.orchestrator import service
from services.orchestrator.deps import SessionDep, SettingsDep
from shared.auth import Caller
from shared.schemas.runs import IterationRead, MetricRead, RunRead, RunSummary, SamplePage
from shared.spec import RunSpec

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunRead)
def create_run(
    spec: RunSpec,
    session: SessionDep,
    settings: SettingsDep,
    _: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunRead:
    run = service.create_run(spec, session=session, settings=settings, idempotency_key=idempotency_key)
    return RunRead.model_validate(run)


@router.get("", response_model=list[RunRead])
def list_runs(
    session: SessionDep,
    _: Caller,
    status: Annotated[
        Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"] | None, Query()
    ] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RunRead]:
    return [RunRead.model_validate(r) for r in service.list_runs(session=session, status=status, offset=offset, limit=limit)]


@router.get("/{run_id}", response_model=RunRead)
def get_run(run_id: uuid.UUID, session: SessionDep, _: Caller) -> RunRead:
    return RunRead.model_validate(service.get_run(run_id, session=session))


@router.get("/{run_id}/summary", response_model=RunSummary)
def get_summary(run_id: uuid.UUID, session: SessionDep, _: Caller) -> RunSummary:
    return service.run_summary(run_id, session=session)


@router.get("/{run_id}/iterations", response_model=list[IterationRead])
def list_iterations(run_id: uuid.UUID, session: SessionDep, _: Caller) -> list[IterationRead]:
    return service.list_iterations(run_id, session=session)


@router.get("/{run_id}/samples", response_model=SamplePage)
def list_samples(
    run_id: uuid.UUID,
    session: SessionDep,
    _: Caller,
    iteration: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    kind: Annotated[Literal["seed", "train", "ood"] | None, Query()] = None,
    selected: bool | None = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SamplePage:
    return service.list_samples(
        run_id, session=session, iteration=iteration, kind=kind, selected=selected, offset=offset, limit=limit
    )


@router.get("/{run_id}/metrics", response_model=list[MetricRead])
def run_metrics(run_id: uuid.UUID, session: SessionDep, _: Caller) -> list[MetricRead]:
    return service.run_metrics(run_id, session=session)


@router.post("/{run_id}/cancel", response_model=RunRead)
def cancel_run(run_id: uuid.UUID, session: SessionDep, _: Caller) -> RunRead:
    return RunRead.model_validate(service.cancel_run(run_id, session=session))
