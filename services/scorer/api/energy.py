"""`POST /v1/energy` and `POST /v1/select`: adapters around services.scorer.service."""

from __future__ import annotations

from fastapi import APIRouter

from services.scorer import service
from services.scorer.deps import ArtifactsDep, CacheDep, LimiterDep
from shared.auth import Caller
from shared.schemas.scoring import EnergyRequest, EnergyResponse, SelectRequest, SelectResponse

router = APIRouter(prefix="/v1", tags=["energy"])


@router.post("/energy", response_model=EnergyResponse)
async def energy(
    body: EnergyRequest, _: Caller, artifacts: ArtifactsDep, cache: CacheDep, limiter: LimiterDep
) -> EnergyResponse:
    """Free energy of each sample under a student checkpoint (lower = more familiar)."""
    return await service.compute_energies(body, cache=cache, artifacts=artifacts, limiter=limiter)


@router.post("/select", response_model=SelectResponse)
async def select(body: SelectRequest, _: Caller) -> SelectResponse:
    """Indices of the samples whose energy lies in the quantile band, ascending energy."""
    return service.select_band(body)
