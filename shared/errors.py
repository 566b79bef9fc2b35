"""Domain errors carrying an HTTP status, rendered by one handler as {"error", "detail"}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class GoldError(Exception):
    status_code = 500
    error = "internal_error"

    def __init__(self, message: str, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers


class NotFound(GoldError):
    status_code = 404
    error = "not_found"


class Conflict(GoldError):
    status_code = 409
    error = "conflict"


class InvalidInput(GoldError):
    """422 naming the offending field: `field` is a dotted path such as "loop.selection_band"."""

    status_code = 422
    error = "invalid_input"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", detail=[{"loc": field.split("."), "msg": message}])


class Unauthorized(GoldError):
    status_code = 401
    error = "unauthorized"


class Forbidden(GoldError):
    status_code = 403
    error = "forbidden"


class PayloadTooLarge(GoldError):
    status_code = 413
    error = "payload_too_large"


class RateLimited(GoldError):
    status_code = 429
    error = "rate_limited"


class UpstreamError(GoldError):
    """A service this one depends on failed or is unreachable (502) or not ready (503)."""

    status_code = 502
    error = "upstream_error"

    def __init__(self, service: str, message: str, status_code: int = 502, retryable: bool = False):
        super().__init__(f"{service}: {message}", detail={"service": service})
        self.service = service
        self.status_code = status_code
        # Unreachable, timed out, 5xx, 408 or 429: worth retrying. Another 4xx means the request
        # itself is wrong.
        self.retryable = retryable


class NotReady(GoldError):
    status_code = 503
    error = "not_ready"


def error_body(error: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The one error shape every service answers with: {"error", "message", "detail"?}."""
    body: dict[str, Any] = {"error": error, "message": message}
    if detail is not None:
        body["detail"] = detail
    return body


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Drop "body" from the location and never echo the input back (it may be huge or secret).
    return [
        {
            "loc": [p for p in err.get("loc", ()) if p != "body"],
            "msg": err.get("msg", ""),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GoldError)
    async def _gold(_: Request, exc: GoldError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.error, exc.message, exc.detail), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc)
        fields = ", ".join(".".join(str(p) for p in d["loc"]) or "body" for d in detail)
        return JSONResponse(error_body("invalid_input", f"invalid fields: {fields}", detail), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body("http_error", str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(SQLAlchemyTimeout)
    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Pool exhausted under load, or PostgreSQL restarting: the client should retry shortly.
        logger.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return JSONResponse(
            error_body("database_unavailable", "the database is busy or restarting; retry in a few seconds"),
            503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal error; see the service log"), 500)
