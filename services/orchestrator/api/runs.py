"""Public run resources. Routes parse, take dependencies, call one service function."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Header, Query, Response, status
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse

from services.orchestrator import exports, predictions, report, service
from services.orchestrator.conditional import NOT_MODIFIED, IfNoneMatch, conditional_json
from services.orchestrator.dataset_card import dataset_card as dataset_card_text
from services.orchestrator.deps import (
    ArtifactsDep,
    GeneratorDep,
    ReadEngineDep,
    ReadSessionDep,
    ScorerDep,
    SessionDep,
    SettingsDep,
)
from shared.auth import PrincipalDep
from shared.names import RunStatus
from shared.schemas.prediction import PredictRequest, PredictResponse
from shared.schemas.runs import (
    Agreement,
    IterationRead,
    MetricRead,
    RejectionPage,
    RunRead,
    RunSummary,
    SampleOrder,
    SamplePage,
)
from shared.spec import RunSpec

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunRead)
def create_run(
    spec: RunSpec,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    generator: GeneratorDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunRead:
    run = service.create_run(
        spec,
        session=session,
        settings=settings,
        principal=principal,
        idempotency_key=idempotency_key,
        generator=generator,
    )
    return RunRead.model_validate(run)


@router.get("", response_model=list[RunRead])
def list_runs(
    session: ReadSessionDep,
    principal: PrincipalDep,
    status: Annotated[RunStatus | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RunRead]:
    return [
        RunRead.model_validate(r)
        for r in service.list_runs(
            session=session, principal=principal, status=status, offset=offset, limit=limit
        )
    ]


@router.get("/{run_id}", response_model=RunRead, responses=NOT_MODIFIED)
def get_run(
    run_id: uuid.UUID, engine: ReadEngineDep, principal: PrincipalDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The run's status, with an ETag: send it back as If-None-Match to get 304 while nothing changed."""
    return conditional_json(service.run_status(run_id, engine=engine, principal=principal), if_none_match)


@router.get("/{run_id}/summary", response_model=RunSummary, responses=NOT_MODIFIED)
def get_summary(
    run_id: uuid.UUID, session: ReadSessionDep, principal: PrincipalDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The run with its iterations and sample counts, with an ETag as for the run's status."""
    summary = service.run_summary(run_id, session=session, principal=principal)
    return conditional_json(summary, if_none_match)


@router.get("/{run_id}/iterations", response_model=list[IterationRead])
def list_iterations(
    run_id: uuid.UUID, session: ReadSessionDep, principal: PrincipalDep
) -> list[IterationRead]:
    return service.list_iterations(run_id, session=session, principal=principal)


@router.get("/{run_id}/samples", response_model=SamplePage)
def list_samples(
    run_id: uuid.UUID,
    session: ReadSessionDep,
    principal: PrincipalDep,
    iteration: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    kind: Annotated[Literal["seed", "train", "ood"] | None, Query()] = None,
    selected: bool | None = None,
    label: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
    agreement: Annotated[
        Agreement | None, Query(description="the teacher's label against the requested")
    ] = None,
    derived_from: Annotated[
        uuid.UUID | None, Query(description="samples generated from prompts that showed this fed-back sample")
    ] = None,
    order: SampleOrder = "position",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SamplePage:
    return service.list_samples(
        run_id,
        session=session,
        principal=principal,
        iteration=iteration,
        kind=kind,
        selected=selected,
        label=label,
        agreement=agreement,
        derived_from=derived_from,
        order=order,
        offset=offset,
        limit=limit,
    )


@router.get("/{run_id}/rejections", response_model=RejectionPage)
def list_rejections(
    run_id: uuid.UUID,
    session: ReadSessionDep,
    principal: PrincipalDep,
    iteration: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RejectionPage:
    """Generated completions that did not become samples, with the reason (unparsable, duplicate...)."""
    return service.list_rejections(
        run_id, session=session, principal=principal, iteration=iteration, offset=offset, limit=limit
    )


@router.get("/{run_id}/metrics", response_model=list[MetricRead])
def run_metrics(run_id: uuid.UUID, session: ReadSessionDep, principal: PrincipalDep) -> list[MetricRead]:
    return service.run_metrics(run_id, session=session, principal=principal)


@router.post("/{run_id}/cancel", response_model=RunRead)
def cancel_run(run_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> RunRead:
    return RunRead.model_validate(service.cancel_run(run_id, session=session, principal=principal))


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_run(
    run_id: uuid.UUID,
    session: SessionDep,
    artifacts: ArtifactsDep,
    background: BackgroundTasks,
    principal: PrincipalDep,
) -> Response:
    folders = service.delete_run(run_id, session=session, principal=principal)
    background.add_task(artifacts.remove, folders)  # after the commit
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{run_id}/dataset", response_class=StreamingResponse)
def download_dataset(
    run_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    format: Annotated[  # noqa: A002 - the query parameter's name
        Literal["jsonl", "parquet"], Query(description="jsonl (one object a line) or parquet")
    ] = "jsonl",
) -> Response:
    """The generated dataset, one row a sample (columns: docs/python-client.md), as JSONL or parquet
    (load either with `datasets.load_dataset("json" | "parquet", data_files=...)`)."""
    if format == "parquet":
        data = exports.dataset_parquet(run_id, session=session, principal=principal)
        return Response(
            data,
            media_type="application/vnd.apache.parquet",
            headers={"Content-Disposition": f'attachment; filename="gold-dataset-{run_id}.parquet"'},
        )
    lines = list(exports.dataset_lines(run_id, session=session, principal=principal))
    return StreamingResponse(
        iter(lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="gold-dataset-{run_id}.jsonl"'},
    )


@router.get("/{run_id}/dataset/card", response_class=PlainTextResponse)
def dataset_card(run_id: uuid.UUID, session: ReadSessionDep, principal: PrincipalDep) -> PlainTextResponse:
    """The dataset's card (README.md, Hugging Face format): task, teacher, student, row counts, licence."""
    card = dataset_card_text(run_id, session=session, principal=principal)
    return PlainTextResponse(card, media_type="text/markdown; charset=utf-8")


@router.get("/{run_id}/model")
def download_model(
    run_id: uuid.UUID, session: SessionDep, artifacts: ArtifactsDep, principal: PrincipalDep
) -> Response:
    """The student as a .tar.gz of its Hugging Face folder (final student when there is one)."""
    filename, data = exports.model_archive(run_id, session=session, principal=principal, artifacts=artifacts)
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post("/{run_id}/predict", response_model=PredictResponse)
def predict(
    run_id: uuid.UUID,
    body: PredictRequest,
    session: ReadSessionDep,
    principal: PrincipalDep,
    scorer: ScorerDep,
) -> PredictResponse:
    """The run's student answers the inputs (each a mapping of the task's input fields): the label
    and its probabilities for a classifier, the generated text for seq2seq and causal students."""
    return predictions.predict(run_id, body, session=session, principal=principal, scorer=scorer)


@router.get("/{run_id}/report", response_class=HTMLResponse)
def run_report(
    run_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    compare: Annotated[list[uuid.UUID], Query(max_length=4, description="runs to plot beside this one")] = [],  # noqa: B006
) -> HTMLResponse:
    """An HTML page with plots: metric per iteration, energies, labels, diversity, feedback picks."""
    return HTMLResponse(report.build_report(run_id, compare, session=session, principal=principal))
