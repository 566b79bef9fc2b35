"""OpenAI-compatible routes: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from services.generator import openai_compat
from services.generator.deps import EngineDep, MetricsDep, OpenAIAccess, SettingsDep
from services.generator.openai_compat import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelList,
)
from shared.errors import GoldError

router = APIRouter(prefix="/v1", tags=["openai"])


def _maybe_stream(result: object) -> object:
    if isinstance(result, AsyncIterator):
        return StreamingResponse(result, media_type="text/event-stream")
    return result


@router.post("/completions", response_model=CompletionResponse)
async def completions(
    body: CompletionRequest,
    access: OpenAIAccess,
    engine: EngineDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> object:
    result = await openai_compat.complete(engine, body, settings=settings, metrics=metrics, quota=access)
    return _maybe_stream(result)


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest,
    access: OpenAIAccess,
    engine: EngineDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> object:
    result = await openai_compat.chat(engine, body, settings=settings, metrics=metrics, quota=access)
    return _maybe_stream(result)


@router.get("/models", response_model=ModelList)
async def models(_: OpenAIAccess, engine: EngineDep) -> ModelList:
    return openai_compat.list_models(engine)


OPENAI_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/models"})


def install_openai_error_format(app: FastAPI) -> None:
    """Errors on the OpenAI routes in OpenAI's shape ({"error": {"message", "type", ...}}), so the
    official client shows the message; the other routes keep the service's own shape."""
    own_gold = app.exception_handlers[GoldError]
    own_invalid = app.exception_handlers[RequestValidationError]

    def openai_body(error: str, message: str, status: int, detail: object = None) -> dict[str, object]:
        body: dict[str, object] = {
            "error": {"message": message, "type": error, "param": None, "code": status}
        }
        if detail is not None:
            body["detail"] = detail
        return body

    async def gold(request: Request, exc: Exception) -> Response:
        if request.url.path not in OPENAI_PATHS or not isinstance(exc, GoldError):
            return await own_gold(request, exc)
        body = openai_body(exc.error, exc.message, exc.status_code, exc.detail)
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        response = await own_invalid(request, exc)
        if request.url.path not in OPENAI_PATHS:
            return response
        own = json.loads(response.body)
        return JSONResponse(openai_body("invalid_request_error", own["message"], 422, own.get("detail")), 422)

    app.add_exception_handler(GoldError, gold)
    app.add_exception_handler(RequestValidationError, invalid)
