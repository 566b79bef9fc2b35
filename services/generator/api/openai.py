"""OpenAI-compatible routes: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`,
and vLLM's `POST /tokenize` and `POST /detokenize`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from services.generator import openai_compat
from services.generator.deps import MetricsDep, OpenAIAccess, SettingsDep, TeachersDep
from services.generator.engines.protocol import OpenAIRequestError, OpenAIResult
from services.generator.openai_schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from services.generator.teachers import UnknownModel
from shared.errors import GoldError, InvalidInput

router = APIRouter(tags=["openai"])


def _respond(result: OpenAIResult) -> Response:
    # The serving code builds the body (vLLM's own models on the vllm engine): passed as is.
    if isinstance(result, AsyncIterator):
        return StreamingResponse(result, media_type="text/event-stream")
    return JSONResponse(result)


@router.post("/v1/completions", response_model=CompletionResponse)
async def completions(
    body: CompletionRequest, access: OpenAIAccess, teachers: TeachersDep, metrics: MetricsDep
) -> Response:
    result = await openai_compat.complete(teachers, body, metrics=metrics, quota=access)
    return _respond(result)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest,
    access: OpenAIAccess,
    teachers: TeachersDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> Response:
    result = await openai_compat.chat(teachers, body, settings=settings, metrics=metrics, quota=access)
    return _respond(result)


@router.get("/v1/models", response_model=ModelList)
async def models(_: OpenAIAccess, teachers: TeachersDep) -> ModelList:
    return openai_compat.list_models(teachers)


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, access: OpenAIAccess, teachers: TeachersDep) -> Response:
    return _respond(await openai_compat.tokenize(teachers, body, quota=access))


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, access: OpenAIAccess, teachers: TeachersDep) -> Response:
    return _respond(await openai_compat.detokenize(teachers, body, quota=access))


OPENAI_PATHS = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize", "/detokenize"}
)


Handler = Callable[[Request, Exception], Awaitable[Response]]


def _own_handler(app: FastAPI, exc_class: type[Exception]) -> Handler:
    """The handler the service installed for `exc_class`. Starlette types handlers as sync or
    async; the service's own are async, and a sync one is answered all the same."""
    handler = app.exception_handlers[exc_class]

    async def call(request: Request, exc: Exception) -> Response:
        response = handler(request, exc)
        return response if isinstance(response, Response) else await response

    return call


def install_openai_error_format(app: FastAPI) -> None:
    """Errors on the OpenAI routes in OpenAI's shape ({"error": {"message", "type", "param",
    "code"}}), an invalid parameter a 400 naming it as OpenAI does, so the official client and
    the libraries on it show the message; the other routes keep the service's own shape."""
    own_gold = _own_handler(app, GoldError)
    own_invalid = _own_handler(app, RequestValidationError)

    def openai_error(kind: str, message: str, status: int, param: str | None) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": param, "code": status}}, status
        )

    async def gold(request: Request, exc: Exception) -> Response:
        if request.url.path not in OPENAI_PATHS or not isinstance(exc, GoldError):
            return await own_gold(request, exc)
        if isinstance(exc, InvalidInput):
            field = ".".join(str(p) for p in exc.detail[0]["loc"])
            return openai_error("invalid_request_error", exc.message, 400, field)
        if isinstance(exc, UnknownModel):  # as OpenAI answers a model it does not have
            return openai_error("invalid_request_error", exc.message, 404, "model")
        param = exc.param if isinstance(exc, OpenAIRequestError) else None
        response = openai_error(exc.error, exc.message, exc.status_code, param)
        response.headers.update(exc.headers or {})
        return response

    async def invalid(request: Request, exc: Exception) -> Response:
        if request.url.path not in OPENAI_PATHS or not isinstance(exc, RequestValidationError):
            return await own_invalid(request, exc)
        errors = exc.errors()
        loc = [str(p) for p in errors[0].get("loc", ()) if p != "body"] if errors else []
        # OpenAI names the top-level parameter; a union's branch name (TokenizeChatRequest) is not one.
        names = [p for p in loc if not p[:1].isupper()]
        param = names[0] if names else None
        where = ".".join(loc) or "body"
        message = f"{where}: {errors[0].get('msg', 'invalid')}" if errors else "invalid request"
        return openai_error("invalid_request_error", message, 400, param)

    app.add_exception_handler(GoldError, gold)
    app.add_exception_handler(RequestValidationError, invalid)
