"""The console's pages. Like the API's routes they parse, take dependencies and call a view (which
reads through the service functions the API uses); the HTML comes from templates/."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.orchestrator import exports, predictions, report, service
from services.orchestrator.conditional import IfNoneMatch, etag_of, not_modified, validators
from services.orchestrator.console import views
from services.orchestrator.console.session import (
    COOKIE,
    SESSION_TTL_S,
    BadCsrfToken,
    SignedInDep,
    auth_enabled,
    check_csrf,
    key_name,
    sign_in,
    sign_out,
)
from services.orchestrator.deps import (
    ArtifactsDep,
    GeneratorDep,
    ReadEngineDep,
    ReadSessionDep,
    ScorerDep,
    SessionDep,
    SettingsDep,
)
from shared.errors import GoldError
from shared.names import RunStatus
from shared.schemas.prediction import PredictRequest
from shared.schemas.runs import Agreement, SampleOrder

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["verdict"] = views.teacher_verdict
templates.env.globals["duration"] = views.duration
LOGIN_CSRF = "gold_login_csrf"

Csrf = Annotated[str | None, Form()]


def page(request: Request, name: str, session: Any, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"session": session, "auth": auth_enabled(request), **context}, status_code=status_code
    )


def _cookie(response: Response, name: str, value: str, path: str = "/ui") -> None:
    secure = False  # the local stack serves plain HTTP; behind TLS the browser keeps it to HTTPS anyway
    response.set_cookie(
        name, value, max_age=SESSION_TTL_S, path=path, httponly=True, samesite="strict", secure=secure
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/ui") -> HTMLResponse:
    # Login CSRF: a double-submit token in a SameSite=Strict cookie and the form.
    token = secrets.token_urlsafe(32)
    response = page(request, "login.html", None, csrf=token, next=_local(next), error=None)
    _cookie(response, LOGIN_CSRF, token)
    return response


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    key: Annotated[str, Form(max_length=1000)],
    csrf: Csrf = None,
    next: Annotated[str, Form()] = "/ui",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF)
    if not csrf or not expected or not secrets.compare_digest(csrf, expected):
        raise BadCsrfToken
    name = key_name(request, key.strip())
    if name is None:
        return page(request, "login.html", None, 401, csrf=csrf, next=_local(next), error="unknown API key")
    landing = RedirectResponse(_local(next), status_code=303)
    _cookie(landing, COOKIE, sign_in(request, name))
    landing.delete_cookie(LOGIN_CSRF, path="/ui")
    return landing


def _local(target: str) -> str:
    """Only a path of the console itself as the place to land after signing in (no open redirect)."""
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui"


@router.post("/logout")
def logout(request: Request, session: SignedInDep, csrf: Csrf = None) -> Response:
    check_csrf(session, csrf)
    sign_out(request, session)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


class FormQuery(BaseModel):
    """A filter form's query: a select left at "any" sends an empty value, which means no filter."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v != ""} if isinstance(data, dict) else data


class RunsQuery(FormQuery):
    status: RunStatus | None = None
    page: int = Field(0, ge=0, le=100_000)


class SamplesQuery(FormQuery):
    iteration: int | None = Field(None, ge=0, le=100_000)
    kind: Literal["seed", "train", "ood", "fed_back", "rejected"] | None = None
    label: str | None = Field(None, max_length=200, pattern=r"^[^\x00]*$")
    agreement: Agreement | None = None
    order: SampleOrder = "position"
    derived_from: uuid.UUID | None = None
    page: int = Field(0, ge=0, le=100_000)


@router.get("", response_class=HTMLResponse)
def runs_list(
    request: Request, session: SignedInDep, db: ReadSessionDep, query: Annotated[RunsQuery, Query()]
) -> HTMLResponse:
    listing = views.runs_page(session=db, principal=session.principal, status=query.status, page=query.page)
    return page(request, "runs.html", session, listing=listing, statuses=list(RunStatus))


@router.get("/runs.fragment", response_class=HTMLResponse)
def runs_fragment(
    request: Request, session: SignedInDep, db: ReadSessionDep, query: Annotated[RunsQuery, Query()]
) -> HTMLResponse:
    """The runs table alone: the list page polls it while runs are going."""
    listing = views.runs_page(session=db, principal=session.principal, status=query.status, page=query.page)
    return page(request, "_runs_table.html", session, listing=listing)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_detail(request: Request, run_id: uuid.UUID, session: SignedInDep, db: ReadSessionDep) -> HTMLResponse:
    view = views.run_page(run_id, session=db, principal=session.principal)
    return page(request, "run.html", session, view=view, prediction=None, predict_error=None, text={})


@router.get("/runs/{run_id}/status.fragment", response_class=HTMLResponse)
def run_status_fragment(
    request: Request, run_id: uuid.UUID, session: SignedInDep, db: ReadSessionDep
) -> HTMLResponse:
    """The run's live stage and progress alone: the run page polls it while the run is going."""
    view = views.run_page(run_id, session=db, principal=session.principal)
    return page(request, "_run_status.html", session, view=view)


ChartName = Literal["metric", "energy", "labels", "ood", "diversity"]


@router.get("/runs/{run_id}/charts/{name}.png")
def run_chart(
    run_id: uuid.UUID,
    name: ChartName,
    session: SignedInDep,
    db: ReadSessionDep,
    engine: ReadEngineDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """A chart is drawn from the run's samples (seconds on a large run), so it is tagged with the
    state of the run it was drawn at: a browser that has the current one gets a 304, not a redraw."""
    run = service.run_status(run_id, engine=engine, principal=session.principal)
    etag = etag_of(f"{name}:{run.model_dump_json()}".encode())
    if unchanged := not_modified(etag, if_none_match):
        return unchanged
    image = report.chart_png(name, [run_id], session=db, principal=session.principal)
    if image is None:
        return Response(status_code=404)
    return Response(image, media_type="image/png", headers=validators(etag))


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: uuid.UUID, session: SignedInDep, db: SessionDep, csrf: Csrf = None) -> Response:
    check_csrf(session, csrf)
    service.cancel_run(run_id, session=db, principal=session.principal)
    return RedirectResponse(f"/ui/runs/{run_id}", status_code=303)


@router.post("/runs/{run_id}/delete")
def delete(
    run_id: uuid.UUID,
    session: SignedInDep,
    db: SessionDep,
    artifacts: ArtifactsDep,
    background: BackgroundTasks,
    csrf: Csrf = None,
) -> Response:
    check_csrf(session, csrf)
    folders = service.delete_run(run_id, session=db, principal=session.principal)
    background.add_task(artifacts.remove, folders)  # after the commit
    return RedirectResponse("/ui", status_code=303)


@router.get("/runs/{run_id}/dataset")
def dataset(run_id: uuid.UUID, session: SignedInDep, db: SessionDep) -> StreamingResponse:
    lines = list(exports.dataset_lines(run_id, session=db, principal=session.principal))
    return StreamingResponse(
        iter(lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="gold-dataset-{run_id}.jsonl"'},
    )


@router.get("/runs/{run_id}/model")
def model(run_id: uuid.UUID, session: SignedInDep, db: SessionDep, artifacts: ArtifactsDep) -> Response:
    filename, data = exports.model_archive(
        run_id, session=db, principal=session.principal, artifacts=artifacts
    )
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post("/runs/{run_id}/predict", response_class=HTMLResponse)
async def predict(
    request: Request, run_id: uuid.UUID, session: SignedInDep, db: ReadSessionDep, scorer: ScorerDep
) -> HTMLResponse:
    """The try-the-student box: the form's input fields, one input, as POST /runs/{id}/predict."""
    form = await request.form()
    check_csrf(session, str(form.get("csrf") or ""))
    view = views.run_page(run_id, session=db, principal=session.principal)
    text = {f: str(form.get(f"field_{f}") or "")[:8000] for f in view.input_fields}
    prediction, error = None, None
    try:
        answer = await _in_thread(
            predictions.predict,
            run_id,
            PredictRequest(inputs=[text]),
            session=db,
            principal=session.principal,
            scorer=scorer,
        )
        prediction = answer.predictions[0]
    except GoldError as exc:
        error = exc.message
    return page(
        request, "run.html", session, view=view, prediction=prediction, predict_error=error, text=text
    )


async def _in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args, **kwargs)


@router.get("/runs/{run_id}/samples", response_class=HTMLResponse)
def samples(
    request: Request,
    run_id: uuid.UUID,
    session: SignedInDep,
    db: ReadSessionDep,
    query: Annotated[SamplesQuery, Query()],
) -> HTMLResponse:
    filters = views.SampleFilters(**query.model_dump())
    view = views.samples_page(run_id, filters, session=db, principal=session.principal)
    return page(request, "samples.html", session, view=view)


@router.get("/new", response_class=HTMLResponse)
def new_run(
    request: Request, session: SignedInDep, example: Annotated[str | None, Query(max_length=100)] = None
) -> HTMLResponse:
    form = views.NewRunForm(views.example_text(example) if example else "", [], views.examples())
    return page(request, "new.html", session, form=form)


@router.post("/new", response_class=HTMLResponse)
async def submit(
    request: Request,
    session: SignedInDep,
    db: SessionDep,
    settings: SettingsDep,
    generator: GeneratorDep,
    spec: Annotated[str, Form(max_length=1_000_000)] = "",
    upload: Annotated[UploadFile | None, File()] = None,
    csrf: Csrf = None,
) -> Response:
    check_csrf(session, csrf)
    if upload is not None and upload.filename:
        spec = (await upload.read()).decode("utf-8", errors="replace")
    created = await _in_thread(
        views.submit_run,
        spec,
        session=db,
        settings=settings,
        principal=session.principal,
        generator=generator,
    )
    if isinstance(created, list):
        form = views.NewRunForm(spec, created, views.examples())
        return page(request, "new.html", session, 422, form=form)
    return RedirectResponse(f"/ui/runs/{created.id}", status_code=303)


@router.get("/compare", response_class=HTMLResponse)
def compare(
    request: Request,
    session: SignedInDep,
    db: ReadSessionDep,
    run: Annotated[list[uuid.UUID], Query(max_length=8)] = [],  # noqa: B006
) -> HTMLResponse:
    view = views.compare_page(run, session=db, principal=session.principal)
    return page(request, "compare.html", session, view=view)


@router.get("/compare/{name}.png")
def compare_chart(
    name: Literal["metric", "diversity", "ood"],
    session: SignedInDep,
    db: ReadSessionDep,
    run: Annotated[list[uuid.UUID], Query(min_length=1, max_length=8)],
) -> Response:
    image = report.chart_png(name, run, session=db, principal=session.principal, named=True)
    if image is None:
        return Response(status_code=404)
    return Response(image, media_type="image/png")
