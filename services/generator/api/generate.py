"""`POST /v1/generate`: labelled synthetic samples for a task, parsed and filtered."""

from __future__ import annotations

from fastapi import APIRouter

from services.generator import service
from services.generator.deps import GenerateAccess, MetricsDep, SettingsDep, TeachersDep
from shared.schemas.generation import AttributesRequest, AttributesResponse, GenerateRequest, GenerateResponse

router = APIRouter(prefix="/v1", tags=["generation"])


@router.post("/generate", response_model=GenerateResponse)
async def generate(
    body: GenerateRequest,
    access: GenerateAccess,
    teachers: TeachersDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> GenerateResponse:
    return await service.generate(
        teachers.engine(body.model), body, settings=settings, metrics=metrics, quota=access
    )


@router.post("/attributes", response_model=AttributesResponse)
async def attributes(
    body: AttributesRequest,
    access: GenerateAccess,
    teachers: TeachersDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> AttributesResponse:
    """What data for the task could be about (subjects, settings, kinds of writer), listed by the
    teacher: pass some as `attributes` to an OOD `/v1/generate` to steer each prompt elsewhere."""
    return await service.attributes(
        teachers.engine(body.model), body, settings=settings, metrics=metrics, quota=access
    )
