"""The public API of GOLD: submit runs, watch them, read their results."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from services.orchestrator.api import health, runs
from services.orchestrator.config import OrchestratorSettings, get_orchestrator_settings
from services.orchestrator.console import install_console
from services.orchestrator.driver import RunDriver
from services.orchestrator.metrics import OrchestratorMetrics
from shared.artifacts import ArtifactStore
from shared.clients import GeneratorClient, ScorerClient
from shared.db.session import make_engine, make_sessionmaker
from shared.jobs import train_queue
from shared.logging import configure_logging
from shared.service_app import create_service_app, serve

if TYPE_CHECKING:
    from services.orchestrator.tracking.worker import Tracker

logger = logging.getLogger(__name__)


def create_app(settings: OrchestratorSettings | None = None, *, drive_runs: bool = True) -> FastAPI:
    settings = settings or get_orchestrator_settings()
    metrics = OrchestratorMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.require_database_url())
        app.state.db_engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        app.state.read_sessions = make_sessionmaker(app.state.read_engine)
        redis = Redis.from_url(settings.require_redis_url())
        # Probes (/readyz, the queue depth in /metrics) get short timeouts; RQ's client blocks on purpose.
        timeout = settings.readiness_timeout_s
        app.state.redis_probe = Redis.from_url(
            settings.require_redis_url(), socket_timeout=timeout, socket_connect_timeout=timeout
        )
        metrics.watch(app.state.sessions, train_queue(app.state.redis_probe))
        token = settings.service_token.get_secret_value() if settings.service_token else None
        generator = GeneratorClient(settings.generator_urls, token, retry_after_s=settings.generator_retry_s)
        app.state.generator = generator
        app.state.artifacts = ArtifactStore.from_settings(settings)
        scorer = ScorerClient(settings.scorer_url, token)
        app.state.scorer = scorer
        driver = None
        if drive_runs and settings.concurrent_runs > 0:
            driver = RunDriver(settings, app.state.sessions, train_queue(redis), generator, scorer, metrics)
            driver.start()
        tracker = start_tracker(settings, app.state.sessions, app.state.artifacts) if drive_runs else None
        yield
        if tracker is not None:
            tracker.stop()
        if driver is not None:
            driver.stop()
        generator.close()
        scorer.close()
        metrics.unwatch()
        app.state.redis_probe.close()
        redis.close()
        engine.dispose()

    app = create_service_app(
        "GOLD orchestrator",
        settings,
        lifespan,
        description="Submit GOLD distillation runs and follow their iterations, samples and metrics.",
        max_body_bytes=settings.max_request_bytes,
        metrics=metrics,
    )
    app.include_router(health.router)
    app.include_router(runs.router)
    install_console(app)
    return app


def start_tracker(
    settings: OrchestratorSettings, sessions: sessionmaker[Session], artifacts: ArtifactStore
) -> Tracker | None:
    """The MLflow tracker (services/orchestrator/tracking) when GOLD_MLFLOW_TRACKING_URI is set. It
    also runs where concurrent_runs is 0: it sends the runs other orchestrators drive."""
    if not settings.mlflow_tracking_uri:
        return None
    try:
        from services.orchestrator.tracking.worker import Tracker
    except ImportError as exc:  # the optional extra is missing: say how to get it, at startup
        raise RuntimeError(
            f"GOLD_MLFLOW_TRACKING_URI is set but mlflow cannot be imported ({exc}): "
            "install the mlflow extra (pip install 'gold[mlflow]')"
        ) from exc
    tracker = Tracker(settings, sessions, artifacts)
    tracker.start()
    logger.info("MLflow tracking to %s", settings.mlflow_tracking_uri)
    return tracker


def main() -> None:
    settings = get_orchestrator_settings()
    configure_logging(settings.log_level, settings.log_format)
    serve(create_app(settings), settings, settings.orchestrator_host, settings.orchestrator_port)
