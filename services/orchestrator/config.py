from functools import lru_cache
from pathlib import Path

from pydantic import Field

from shared.settings import GoldSettings


class OrchestratorSettings(GoldSettings):
    orchestrator_host: str = Field(default="127.0.0.1", description="Address the orchestrator listens on.")
    orchestrator_port: int = Field(default=8000, description="Port the orchestrator listens on.")
    # The default is the benchmark data beside the project and the project itself.
    data_roots: list[Path] = Field(
        default_factory=lambda: [Path("../shared/data"), Path(".")],
        description="Evaluation files (evaluation.path, reference_path) must lie under one of these "
        "folders (JSON list); relative paths resolve against the first.",
    )
    concurrent_runs: int = Field(
        default=1,
        ge=0,
        le=64,
        description="How many runs this orchestrator drives at the same time. 0: it only serves the API; "
        "runs are driven by the orchestrators that have a number here.",
    )
    driver_poll_s: float = Field(
        default=1.0, description="How often an idle driver looks for a run to drive, in seconds."
    )
    lease_s: float = Field(
        default=120.0,
        description="A driven run's lease, renewed as it runs; a run whose lease expired (its orchestrator "
        "died) is taken over by another.",
    )
    dependency_patience_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long a run waits for a service it depends on while that service is down: "
        "unreachable, timing out, answering 5xx, 408 or 429 (a generator reloading its engine), or a "
        "training job with no trainer worker on its queue. The run stays running meanwhile, its "
        "waiting_for and waiting_since saying what it waits for; past this many seconds it fails "
        "naming it. An error that is the request's own (another 4xx) fails the run at once.",
    )
    generator_retry_s: float = Field(
        default=10.0,
        description="With several generators: how long one that failed is skipped before a /readyz probe "
        "may bring it back, in seconds.",
    )
    # The one retry layer of training (services/orchestrator/stages/train.py says why).
    train_attempts: int = Field(
        default=3, description="Attempts of one training step (each a fresh RQ job) before the run fails."
    )
    train_poll_s: float = Field(
        default=1.0, description="How often a training job's status is read while it runs, in seconds."
    )
    max_request_bytes: int = Field(
        default=2_000_000, description="Largest request body, in bytes (413 past it)."
    )
    readiness_timeout_s: float = Field(
        default=2.0,
        description="/readyz: how long Postgres and Redis each get to answer (also Redis's socket timeouts "
        "when the queue depth is read for /metrics), in seconds.",
    )
    # Experiment tracking (services/orchestrator/tracking, docs/mlflow.md); needs the mlflow extra.
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="An MLflow tracking server (e.g. http://127.0.0.1:5000): every run is logged to it as an "
        "MLflow run (its spec, tags, metrics per iteration, report, dataset and student), from a "
        "background outbox that retries while the server is down. Unset: no tracking.",
    )
    mlflow_experiment: str = Field(
        default="gold",
        min_length=1,
        description="The MLflow experiment of runs not made by `gold eval` (whose runs share one "
        "experiment per evaluated spec, named after it).",
    )
    mlflow_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of each call to the MLflow tracking server, in seconds."
    )
    mlflow_retry_max_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest wait between two tries to send a run to an MLflow tracking server that failed "
        "(the wait doubles from 1 s up to this), in seconds.",
    )


@lru_cache
def get_orchestrator_settings() -> OrchestratorSettings:
    return OrchestratorSettings()
