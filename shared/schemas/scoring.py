"""Contract of the scorer's `POST /v1/energy` and `POST /v1/select`."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from shared.schemas.base import InputModel, OutputModel

SampleFields = dict[str, Annotated[str, StringConstraints(max_length=8000)]]


class EnergyRequest(InputModel):
    checkpoint_id: uuid.UUID
    samples: list[SampleFields] = Field(min_length=1, max_length=4096)
    temperature: float = Field(default=1.0, gt=0.0, le=100.0)
    # seq2seq only: "mask" averages over real target tokens; "reference" reproduces the
    # reference code, which also averages over padding (kept for comparison only).
    pad_mode: Literal["mask", "reference"] = "mask"


class EnergyResponse(OutputModel):
    checkpoint_id: uuid.UUID
    energies: list[float]
    student_kind: str


class SelectRequest(InputModel):
    energies: list[float] = Field(min_length=1, max_length=100000)
    band: tuple[float, float] = (0.5, 0.8)
    count: int | None = Field(default=None, ge=0, le=100000)
    # Optional per-sample labels; with stratify, the count is shared across labels.
    labels: list[str] | None = None
    stratify: bool = False
    # Indices that may not be selected (e.g. feedback the teacher rejected); the band's quantiles
    # are still those of all the energies.
    exclude: list[int] = Field(default_factory=list, max_length=100000)

    @field_validator("band")
    @classmethod
    def _band(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 <= value[0] < value[1] <= 1.0):
            raise ValueError("need 0 <= low < high <= 1")
        return value


class SelectResponse(OutputModel):
    selected: list[int]  # indices into the request's energies, ascending energy
    low_energy: float  # the energy at the band's lower quantile
    high_energy: float


class EmbedRequest(InputModel):
    """Texts to place in the sentence-embedding space (all-MiniLM-L6-v2): near-duplicate filtering,
    the OOD batch's distance from the pool, and the diversity of generated data."""

    texts: list[Annotated[str, StringConstraints(max_length=8000)]] = Field(min_length=1, max_length=4096)


class EmbedResponse(OutputModel):
    model: str
    dimensions: int
    embeddings: list[list[float]]  # unit length, one per text, in request order
