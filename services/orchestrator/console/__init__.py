"""The web console at /ui: runs, their samples and charts, new runs and comparisons, in a browser.

Server-rendered (Jinja2 templates, a little plain JavaScript in static/), served by the orchestrator
itself: nothing from another origin, no build step."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from services.orchestrator.console.routes import page, router
from services.orchestrator.console.session import (
    BadCsrfToken,
    ConsoleSession,
    SignInRequired,
    current_session,
)
from shared.errors import GoldError

PREFIX = "/ui"
# Only the orchestrator's own origin: scripts, styles, images and form targets alike.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(
        f"{PREFIX}/static", StaticFiles(directory=Path(__file__).parent / "static"), name="console-static"
    )
    api_errors = app.exception_handlers[GoldError]

    async def gold_error(request: Request, exc: Exception) -> Response:
        """The API answers JSON; a console page answers an HTML page saying the same."""
        assert isinstance(exc, GoldError)
        if not _is_console(request):
            answer = api_errors(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        return page(
            request,
            "error.html",
            _signed_in(request),
            exc.status_code,
            status=exc.status_code,
            message=exc.message,
        )

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)

    async def bad_csrf(request: Request, exc: Exception) -> Response:
        message = "This form has expired or did not come from the console: reload the page and try again."
        return page(request, "error.html", None, 403, status=403, message=message)

    app.add_exception_handler(GoldError, gold_error)
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(BadCsrfToken, bad_csrf)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if _is_console(request):
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "same-origin"
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _signed_in(request: Request) -> ConsoleSession | None:
    """The session for an error page's header (sign out, navigation), where there is one."""
    try:
        return current_session(request)
    except SignInRequired:
        return None


def _is_console(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(f"{PREFIX}/")
