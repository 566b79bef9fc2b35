"""Scorer settings (env prefix GOLD_)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.settings import GoldSettings


class ScorerSettings(GoldSettings):
    scorer_host: str = Field(default="127.0.0.1", description="Address the scorer listens on.")
    scorer_port: int = Field(default=8002, description="Port the scorer listens on.")
    scorer_batch_size: int = Field(
        default=64,
        description="Samples per forward pass (rows are sorted by length first, so padding stays small).",
    )
    # Loaded students kept in memory: the least recently used is dropped past either bound.
    scorer_cache_max_models: int = Field(default=4, description="Most students kept loaded.")
    scorer_cache_max_bytes: int = Field(
        default=4 * 1024**3, description="Most bytes of students kept loaded."
    )
    # On 2 CPU cores one at a time is fastest (torch is parallel).
    scorer_concurrency: int = Field(
        default=1, description="Model calls run at the same time (in a thread pool)."
    )
    torch_threads: int | None = Field(
        default=None, description="CPU threads for torch. Unset: torch's default."
    )


@lru_cache
def get_scorer_settings() -> ScorerSettings:
    return ScorerSettings()
