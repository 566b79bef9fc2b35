from functools import lru_cache
from pathlib import Path

from pydantic import Field

from shared.settings import GoldSettings


class OrchestratorSettings(GoldSettings):
    orchestrator_host: str = "127.0.0.1"
    orchestrator_port: int = 8000
    # Evaluation files must lie under one of these folders (relative paths resolve against the
    # first); the default is the benchmark data beside the project and the project itself.
    data_roots: list[Path] = Field(default_factory=lambda: [Path("../shared/data"), Path(".")])
    # How many runs one orchestrator drives at the same time. 0: this orchestrator only serves the
    # API; runs are driven by the orchestrators that have a number here (docs/deploy.md, "Several hosts").
    concurrent_runs: int = Field(default=1, ge=0, le=64)
    driver_poll_s: float = 1.0
    lease_s: float = 120.0
    # A service call is retried with backoff until this deadline, then the run fails naming it.
    upstream_deadline_s: float = 300.0
    # With several generators (GOLD_GENERATOR_URL=url1,url2): how long one that failed is skipped
    # before a /readyz probe may bring it back.
    generator_retry_s: float = 10.0
    # Attempts of one training step (each a fresh RQ job) before the run fails: the one retry
    # layer of training (services/orchestrator/stages/train.py says why).
    train_attempts: int = 3
    # How often a training job's status is read while it runs.
    train_poll_s: float = 1.0
    max_request_bytes: int = 2_000_000
    # /readyz: how long Postgres and Redis each get to answer (also Redis's socket timeouts when
    # the queue depth is read for /metrics).
    readiness_timeout_s: float = 2.0


@lru_cache
def get_orchestrator_settings() -> OrchestratorSettings:
    return OrchestratorSettings()
