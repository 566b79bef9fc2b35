"""`POST /v1/embed`: an adapter around services.scorer.service."""

from __future__ import annotations

from fastapi import APIRouter

from services.scorer import service
from services.scorer.deps import EncoderDep, LimiterDep
from shared.auth import Caller
from shared.schemas.scoring import EmbedRequest, EmbedResponse

router = APIRouter(prefix="/v1", tags=["embedding"])


@router.post("/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, _: Caller, encoder: EncoderDep, limiter: LimiterDep) -> EmbedResponse:
    """Sentence embeddings (all-MiniLM-L6-v2: mean pooling over the tokens, then L2 normalisation):
    one unit vector of 384 floats per text, in request order; cosine similarity is their dot
    product. Texts longer than 256 tokens are truncated; an empty text is embedded too."""
    return await service.embed_texts(body, encoder=encoder, limiter=limiter)
