"""Readiness (the engine is loaded); /healthz and /metrics come with every service (shared/service_app.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    if engine is not None and engine.ready():
        info = engine.info
        return JSONResponse({"status": "ready", "engine": info.engine, "model": info.model.model_id})
    error = request.app.state.engine_error
    body = {"status": "failed", "error": error} if error else {"status": "loading"}
    return JSONResponse(body, status_code=503)
