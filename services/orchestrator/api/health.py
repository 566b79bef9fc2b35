"""Readiness (Postgres and Redis answer); /healthz and /metrics come with every service."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.orchestrator.deps import SettingsDep
from services.orchestrator.health import readiness

router = APIRouter(tags=["health"])


@router.get("/readyz")
async def readyz(request: Request, settings: SettingsDep) -> JSONResponse:
    """200 when Postgres and Redis answer; 503 naming those that do not (`down`)."""
    ready, body = await readiness(
        request.app.state.db_engine, request.app.state.redis_probe, settings.readiness_timeout_s
    )
    return JSONResponse(body, status_code=200 if ready else 503)
