"""The generator service: teacher LLMs behind a data-generation API and an OpenAI-compatible one."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.generator.api import classify, generate, health, openai
from services.generator.config import GeneratorSettings, get_generator_settings
from services.generator.engines.protocol import TextEngine
from services.generator.limits import KeyLimiter
from services.generator.metrics import Metrics
from services.generator.teachers import Teachers
from shared.logging import configure_logging
from shared.service_app import create_service_app, serve

logger = logging.getLogger(__name__)


def create_app(
    settings: GeneratorSettings | None = None,
    *,
    engine: TextEngine | None = None,
    engines: Mapping[str, TextEngine] | None = None,
    exit_on_engine_failure: bool = False,
) -> FastAPI:
    """The app; the teachers' engines are built and loaded in the lifespan (in the background, so
    /healthz answers at once and /readyz turns 200 when every model is loaded). `engine` replaces
    the default teacher's engine, `engines` every teacher's, by name (tests of the serving logic)."""
    settings = settings or get_generator_settings()
    given = engines if engines is not None else {settings.generator_model: engine} if engine else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        teachers = app.state.teachers = Teachers(settings, given)
        app.state.limiter = KeyLimiter(settings)
        starting = asyncio.create_task(teachers.start(exit_on_failure=exit_on_engine_failure))
        watching = asyncio.create_task(teachers.watch())
        yield
        watching.cancel()
        # A model loads in a thread that cannot be interrupted: let it finish, then close it,
        # so no engine process outlives the service.
        try:
            await asyncio.wait_for(asyncio.shield(starting), settings.generator_start_timeout_s)
        except TimeoutError:
            logger.warning(
                "the teachers were still loading %.0f s after shutdown began: closing what is loaded",
                settings.generator_start_timeout_s,
            )
        except Exception:  # start() logs an engine's failure itself; anything else is a bug
            logger.exception("loading the teachers failed")
        await teachers.close()
        await app.state.limiter.aclose()

    app = create_service_app(
        "GOLD generator",
        settings,
        lifespan,
        description="Synthetic training data and teacher labels from a teacher LLM; OpenAI-compatible API.",
        max_body_bytes=settings.generator_max_request_bytes,
        metrics=Metrics(),
    )
    app.state.teachers = Teachers(settings, given)  # replaced by the lifespan's, which loads them
    app.include_router(health.router)
    app.include_router(generate.router)
    app.include_router(classify.router)
    app.include_router(openai.router)
    openai.install_openai_error_format(app)
    return app


def main() -> None:
    settings = get_generator_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, exit_on_engine_failure=True)
    serve(app, settings, settings.generator_host, settings.generator_port)
    if any(teacher.error for teacher in app.state.teachers.all):
        sys.exit(1)
