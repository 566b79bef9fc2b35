"""`POST /v1/classify`: the teacher labels inputs few-shot by label likelihood."""

from __future__ import annotations

from fastapi import APIRouter

from services.generator import service
from services.generator.deps import ClassifyAccess, EngineDep, MetricsDep, SettingsDep
from shared.schemas.generation import ClassifyRequest, ClassifyResponse

router = APIRouter(prefix="/v1", tags=["generation"])


@router.post("/classify", response_model=ClassifyResponse)
async def classify(
    body: ClassifyRequest,
    access: ClassifyAccess,
    engine: EngineDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> ClassifyResponse:
    return await service.classify(
        engine, body, settings=settings, metrics=metrics, limiter=access.limiter, key=access.key
    )
