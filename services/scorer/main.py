"""The scorer service: free energies of samples under student checkpoints, band selection, and
sentence embeddings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.scorer.api.embedding import router as embedding_router
from services.scorer.api.energy import router as energy_router
from services.scorer.api.predict import router as predict_router
from services.scorer.config import ScorerSettings, get_scorer_settings
from services.scorer.embedding import MiniLMEncoder
from services.scorer.engine import ModelCache, load_energy_model
from shared.artifacts import ArtifactStore
from shared.metrics import ServiceMetrics
from shared.service_app import create_service_app

logger = logging.getLogger(__name__)


def create_app(settings: ScorerSettings | None = None) -> FastAPI:
    settings = settings or get_scorer_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        app.state.artifacts = ArtifactStore.from_settings(settings)
        app.state.model_cache = ModelCache(
            settings.scorer_cache_max_models,
            settings.scorer_cache_max_bytes,
            partial(load_energy_model, batch_size=settings.scorer_batch_size),
        )
        app.state.encoder = MiniLMEncoder(settings.scorer_batch_size)  # loads on its first request
        app.state.model_limiter = anyio.CapacityLimiter(settings.scorer_concurrency)
        logger.info("scorer ready; checkpoints from %s", app.state.artifacts.where("checkpoints"))
        yield
        app.state.model_cache.clear()
        app.state.encoder.close()

    app = create_service_app(
        "GOLD scorer",
        settings,
        lifespan,
        description="Free energy of generated samples under a student, the student's predictions, "
        "and sentence embeddings.",
        metrics=ServiceMetrics("scorer"),
    )
    app.include_router(energy_router)
    app.include_router(predict_router)
    app.include_router(embedding_router)

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        cache = getattr(app.state, "model_cache", None)
        if cache is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "models_loaded": len(cache), "model_bytes": cache.nbytes})

    return app
