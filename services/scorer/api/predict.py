"""`POST /v1/predict`: an adapter around services.scorer.service.predict."""

from __future__ import annotations

from fastapi import APIRouter

from services.scorer import service
from services.scorer.deps import ArtifactsDep, CacheDep, LimiterDep
from shared.auth import Caller
from shared.schemas.prediction import CheckpointPredictRequest, CheckpointPredictResponse

router = APIRouter(prefix="/v1", tags=["predict"])


@router.post("/predict", response_model=CheckpointPredictResponse)
async def predict(
    body: CheckpointPredictRequest, _: Caller, artifacts: ArtifactsDep, cache: CacheDep, limiter: LimiterDep
) -> CheckpointPredictResponse:
    """The student checkpoint's answers to the inputs: label and probabilities, or generated text."""
    return await service.predict(body, cache=cache, artifacts=artifacts, limiter=limiter)
