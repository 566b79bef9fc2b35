"""The teacher answering inputs few-shot: `POST /v1/classify` (the label by likelihood) and
`POST /v1/answer` (the output field by greedy decoding). Both need the `classify` scope."""

from __future__ import annotations

from fastapi import APIRouter

from services.generator import service
from services.generator.deps import ClassifyAccess, MetricsDep, SettingsDep, TeachersDep
from shared.schemas.generation import AnswerRequest, AnswerResponse, ClassifyRequest, ClassifyResponse

router = APIRouter(prefix="/v1", tags=["generation"])


@router.post("/classify", response_model=ClassifyResponse)
async def classify(
    body: ClassifyRequest,
    access: ClassifyAccess,
    teachers: TeachersDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> ClassifyResponse:
    """The teacher's label for each input, by likelihood after the few-shot seed examples, with the
    label distribution (contextually calibrated unless `calibrate` is false)."""
    return await service.classify(
        teachers.engine(body.model), body, settings=settings, metrics=metrics, quota=access
    )


@router.post("/answer", response_model=AnswerResponse)
async def answer(
    body: AnswerRequest,
    access: ClassifyAccess,
    teachers: TeachersDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> AnswerResponse:
    """The teacher's answer (the task's output field) for each input: greedy decoding after the
    few-shot seed examples, one line, at most `max_tokens`. Works for any task type."""
    return await service.answer(
        teachers.engine(body.model), body, settings=settings, metrics=metrics, quota=access
    )
