"""Payload and result of the trainer's RQ job (JSON only; the job reloads state from Postgres)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

# loop: the loop's student; final: a fresh student on the whole generated pool; reference: a fresh
# student on real labelled examples (evaluation.reference_path), the supervised yardstick; fewshot:
# no training, the pretrained causal student answers the evaluation data after the seed examples.
TrainRole = Literal["loop", "final", "reference", "fewshot"]


class TrainJob(BaseModel):
    run_id: str
    iteration: int
    role: TrainRole = "loop"
    # Continue from this checkpoint (the loop's persistent student) instead of a fresh one.
    init_checkpoint_id: str | None = None


class TrainResult(BaseModel):
    checkpoint_id: str
    metrics: dict[str, float]
    seconds: float
    examples_per_second: float
    extra: dict[str, Any] = {}
