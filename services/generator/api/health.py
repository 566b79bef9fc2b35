"""Readiness (every teacher's engine is loaded); /healthz and /metrics come with every service
(shared/service_app.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.generator.deps import TeachersDep

router = APIRouter(tags=["health"])


@router.get("/readyz")
async def readyz(teachers: TeachersDep) -> JSONResponse:
    states = {teacher.name: teacher.state() for teacher in teachers.all}
    default = teachers.default.engine
    if default is not None and all(state == "ready" for state in states.values()):
        info = default.info
        body = {"status": "ready", "engine": info.engine, "model": info.model.model_id, "teachers": states}
        return JSONResponse(body)
    errors = [f"{t.name}: {t.error}" for t in teachers.all if t.error]
    body = {"status": "failed", "error": "; ".join(errors)} if errors else {"status": "loading"}
    return JSONResponse({**body, "teachers": states}, status_code=503)
