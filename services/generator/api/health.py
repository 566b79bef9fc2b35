"""Readiness (the engine is loaded) and Prometheus metrics; /healthz comes with every service."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
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


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=metrics.content_type)
