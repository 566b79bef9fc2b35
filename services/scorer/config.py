"""Scorer settings (env prefix GOLD_)."""

from __future__ import annotations

from functools import lru_cache

from shared.settings import GoldSettings


class ScorerSettings(GoldSettings):
    scorer_host: str = "127.0.0.1"
    scorer_port: int = 8002
    # Samples per forward pass (rows are sorted by length first, so padding stays small).
    scorer_batch_size: int = 64
    # Loaded students kept in memory: least recently used is dropped past either bound.
    scorer_cache_max_models: int = 4
    scorer_cache_max_bytes: int = 4 * 1024**3
    # Model calls run in a thread pool; on 2 CPU cores one at a time is fastest (torch is parallel).
    scorer_concurrency: int = 1
    torch_threads: int | None = None


@lru_cache
def get_scorer_settings() -> ScorerSettings:
    return ScorerSettings()
