"""What every GOLD HTTP service has in common: settings on app.state, error handlers, /healthz."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from shared.errors import install_error_handlers
from shared.http_limits import BodySizeLimit, ConcurrencyLimit
from shared.settings import GoldSettings


def create_service_app(
    title: str,
    settings: GoldSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    description: str = "",
    max_body_bytes: int = 2_000_000,
    max_in_flight: int = 32,
) -> FastAPI:
    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(ConcurrencyLimit, limit=max_in_flight)  # outermost: queued requests hold nothing

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
