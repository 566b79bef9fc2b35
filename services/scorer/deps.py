"""Dependencies: the long-lived resources built in the lifespan, reached through Annotated types."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request

from services.scorer.config import ScorerSettings
from services.scorer.embedding import TextEncoder
from services.scorer.engine import ModelCache
from shared.artifacts import ArtifactStore


def get_settings(request: Request) -> ScorerSettings:
    return request.app.state.settings


def get_artifacts(request: Request) -> ArtifactStore:
    return request.app.state.artifacts


def get_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache


def get_encoder(request: Request) -> TextEncoder:
    return request.app.state.encoder


def get_limiter(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.model_limiter


SettingsDep = Annotated[ScorerSettings, Depends(get_settings)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
CacheDep = Annotated[ModelCache, Depends(get_cache)]
EncoderDep = Annotated[TextEncoder, Depends(get_encoder)]
LimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_limiter)]
