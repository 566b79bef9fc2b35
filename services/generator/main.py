"""The generator service: a teacher LLM behind a data-generation API and an OpenAI-compatible one."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI

from services.generator.api import classify, generate, health, openai
from services.generator.config import GeneratorSettings, get_generator_settings
from services.generator.engines.factory import build_engine
from services.generator.engines.protocol import TextEngine
from services.generator.limits import KeyLimiter
from services.generator.metrics import Metrics
from services.generator.model_store import ResolvedModel, resolve_model
from shared.logging import configure_logging, uvicorn_log_config
from shared.service_app import create_service_app

logger = logging.getLogger(__name__)


def resolve_served_model(settings: GeneratorSettings) -> ResolvedModel:
    """The configured model; the openai engine names a remote model and needs no local files."""
    name = settings.generator_model
    if settings.generator_engine == "openai":
        remote = settings.generator_openai_model or settings.generator_model_ids.get(name, name)
        return ResolvedModel(
            name=name, model_id=remote, path=settings.generator_openai_base_url or "", revision=None
        )
    return resolve_model(name, settings.generator_models, settings.generator_model_ids, settings.models_dir)


async def _start_engine(
    app: FastAPI, settings: GeneratorSettings, engine: TextEngine | None, exit_on_failure: bool
) -> None:
    started = time.perf_counter()
    try:
        if engine is None:
            model = await asyncio.to_thread(resolve_served_model, settings)
            engine = build_engine(settings, model)
        app.state.starting_engine = engine
        await engine.start()
        app.state.engine = engine
        logger.info(
            "%s engine ready with %s in %.1f s",
            engine.info.engine,
            engine.info.model.model_id,
            time.perf_counter() - started,
        )
    except Exception as exc:
        app.state.engine_error = f"{type(exc).__name__}: {exc}"
        logger.exception("the engine failed to start")
        if exit_on_failure:  # a service that can never serve should stop, not answer 503 forever
            os.kill(os.getpid(), signal.SIGTERM)


async def _watch_engine(app: FastAPI, settings: GeneratorSettings, exit_on_failure: bool) -> None:
    """Reload an engine that dies while serving (vLLM's engine process killed, e.g. by the OOM
    killer): until then the routes answer 503 with the reason, as while it first loads."""
    while True:
        await asyncio.sleep(settings.generator_watch_s)
        engine: TextEngine | None = app.state.engine
        if engine is None or engine.ready():
            continue
        app.state.engine = None
        app.state.engine_restarts += 1
        logger.error(
            "the %s engine died; reloading it (restart %d)", engine.info.engine, app.state.engine_restarts
        )
        with suppress(Exception):
            await engine.close()
        await _start_engine(app, settings, engine, exit_on_failure)


def create_app(
    settings: GeneratorSettings | None = None,
    *,
    engine: TextEngine | None = None,
    exit_on_engine_failure: bool = False,
) -> FastAPI:
    """The app; the engine is built and loaded in the lifespan (in the background, so /healthz
    answers at once and /readyz turns 200 when the model is loaded). `engine` replaces the
    configured one (tests of the serving logic)."""
    settings = settings or get_generator_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = None
        app.state.starting_engine = None
        app.state.engine_error = None
        app.state.limiter = KeyLimiter(settings)
        app.state.engine_restarts = 0
        starting = asyncio.create_task(_start_engine(app, settings, engine, exit_on_engine_failure))
        watching = asyncio.create_task(_watch_engine(app, settings, exit_on_engine_failure))
        yield
        watching.cancel()
        # The model loads in a thread that cannot be interrupted: let it finish, then close it,
        # so no engine process outlives the service.
        with suppress(Exception):
            await asyncio.wait_for(asyncio.shield(starting), settings.generator_start_timeout_s)
        running = app.state.engine or app.state.starting_engine
        if running is not None:
            await running.close()
        await app.state.limiter.aclose()

    app = create_service_app(
        "GOLD generator",
        settings,
        lifespan,
        description="Synthetic training data and teacher labels from a teacher LLM; OpenAI-compatible API.",
        max_body_bytes=settings.generator_max_request_bytes,
        metrics=Metrics(),
    )
    app.state.engine = None
    app.state.engine_error = None
    app.state.engine_restarts = 0
    app.include_router(health.router)
    app.include_router(generate.router)
    app.include_router(classify.router)
    app.include_router(openai.router)
    openai.install_openai_error_format(app)
    return app


def main() -> None:
    import uvicorn

    settings = get_generator_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, exit_on_engine_failure=True)
    uvicorn.run(
        app,
        host=settings.generator_host,
        port=settings.generator_port,
        log_config=uvicorn_log_config(settings.log_format),
    )
    if app.state.engine_error:
        sys.exit(1)
