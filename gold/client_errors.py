"""The errors `gold.Client` and `gold.AsyncClient` raise: one class per kind of answer, each carrying
the API's own message (the orchestrator answers every error as {"error", "message", "detail"}).

Catch `GoldError` for all of them; `retryable` says whether the same request may succeed later
(no answer, a timeout, 5xx, 429), which is what `gold`'s commands wait through."""

from __future__ import annotations

from typing import Any

import httpx


class GoldError(Exception):
    """An orchestrator request that failed. `status_code` is None where no answer came."""

    status_code: int | None = None
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        detail: Any = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.error = error  # the API's error code, e.g. "not_found", "invalid_input"
        self.detail = detail
        self.url = url


class AuthenticationError(GoldError):
    """401: no API key, or one the orchestrator does not know (send it as `token=`)."""

    status_code = 401


class PermissionDeniedError(GoldError):
    """403: the key may not do this (e.g. an admin-only call)."""

    status_code = 403


class NotFoundError(GoldError):
    """404: no such run, or another tenant's (the API answers both alike)."""

    status_code = 404


class ConflictError(GoldError):
    """409: the run's state does not allow it (no trained student yet, an Idempotency-Key reused
    with another spec, a run already finished)."""

    status_code = 409


class ValidationError(GoldError):
    """422: the request names a bad value. `field` is the dotted path of the first one
    ("loop.selection_band", "format"); `errors` lists them all as {"field", "message"}."""

    status_code = 422

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errors = _field_errors(self.detail)
        self.field: str | None = self.errors[0]["field"] if self.errors else None

    def __str__(self) -> str:
        """Each bad field with its reason ("loop.selection_band: need 0 <= low < high <= 1"), which
        the API's one-line message ("invalid fields: loop.selection_band") leaves out."""
        if not self.errors:
            return self.message
        return "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in self.errors)


class RateLimitedError(GoldError):
    """429 after the client's own retries: `retry_after_s` is the server's Retry-After, if any."""

    status_code = 429
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class ServerError(GoldError):
    """5xx: the orchestrator or a service behind it failed or is not ready; worth retrying."""

    status_code = 500
    retryable = True


class UnreachableError(GoldError):
    """No answer: the connection failed or timed out (the orchestrator is down or restarting)."""

    retryable = True


_BY_STATUS: dict[int, type[GoldError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitedError,
}


def _field_errors(detail: Any) -> list[dict[str, str]]:
    """The API's 422 detail ([{"loc": [...], "msg": ...}]) as [{"field": "a.b", "message": ...}]."""
    if not isinstance(detail, list):
        return []
    out = []
    for item in detail:
        if isinstance(item, dict):
            loc = item.get("loc") or []
            field = ".".join(str(p) for p in loc) if isinstance(loc, list) else str(loc)
            out.append({"field": field, "message": str(item.get("msg", ""))})
    return out


def retry_after_s(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the delta form; an HTTP date is not sent by these services)."""
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> GoldError:
    """The typed error for an answer of 400 or more, with the API's message (or the body's start)."""
    try:
        url: str | None = str(response.request.url)
    except RuntimeError:  # a response built without its request
        url = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        message, code, detail = str(body["message"]), body.get("error"), body.get("detail")
    else:
        message, code, detail = response.text[:500] or response.reason_phrase, None, None
    status = response.status_code
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else GoldError)
    kwargs: dict[str, Any] = {"status_code": status, "error": code, "detail": detail, "url": url}
    if kind is RateLimitedError:
        return RateLimitedError(message, retry_after_s=retry_after_s(response), **kwargs)
    error = kind(message, **kwargs)
    if status == 408:  # the request timed out waiting: the same request may well succeed
        error.retryable = True
    return error


def unreachable(exc: httpx.HTTPError, url: str) -> UnreachableError:
    return UnreachableError(f"{type(exc).__name__} calling {url}: {exc}", url=url)
