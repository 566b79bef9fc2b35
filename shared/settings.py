"""Configuration: one pydantic-settings base class, one subclass per service, env prefix GOLD_."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Names a run spec may give as `student.model`. "default" means the kind's default student;
# the two package-backed names need no hub. Hub ids are loaded with trust_remote_code off and only
# when listed here: a spec can never point the trainer at an arbitrary path or repository.
DEFAULT_ALLOWED_STUDENTS = [
    "default",
    "minilm",
    "sentence-transformers/all-MiniLM-L6-v2",
    "tiny-t5",
    "smollm2-135m",
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "Qwen/Qwen2.5-0.5B",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-1B-Instruct",
    "t5-small",
    "t5-base",
    "google-t5/t5-small",
    "google-t5/t5-base",
    "google/flan-t5-small",
    "google/flan-t5-base",
    "bert-base-uncased",
    "google-bert/bert-base-uncased",
    "roberta-base",
    "FacebookAI/roberta-base",
    "microsoft/deberta-v3-base",
]


class GoldSettings(BaseSettings):
    """Settings every process reads. The launcher (`gold up`) fills the URLs it starts."""

    model_config = SettingsConfigDict(env_prefix="GOLD_", extra="ignore")

    # Relative paths are resolved against the working directory when the settings are read.
    data_dir: Path = Field(
        default=Path(".gold"),
        description="The local stack's data: databases, logs, the API token, and the default place of "
        "the folders below.",
    )
    # Checkpoints live in a local directory used in place, or, for trainers and scorers on several
    # hosts, behind an fsspec URL with a local cache in each process (shared/artifacts.py).
    artifact_dir: Path | None = Field(
        default=None, description="Local checkpoint directory, used in place. Unset: {data_dir}/artifacts."
    )
    artifacts_url: str | None = Field(
        default=None,
        description="Checkpoints behind any fsspec URL (s3://bucket/gold, gs://..., file:///mnt/gold), for "
        "trainers and scorers on several hosts; replaces artifact_dir.",
    )
    artifact_cache_dir: Path | None = Field(
        default=None,
        description="With artifacts_url: where each process keeps its copies. Unset: "
        "{data_dir}/artifact-cache.",
    )
    artifact_cache_max_gb: float | None = Field(
        default=20.0,
        gt=0.0,
        description="The cache's size limit: after a download, the copies used least recently (and not in "
        "the last 10 minutes) are removed until the cache fits. Unset (null): never pruned.",
    )
    model_dir: Path | None = Field(
        default=None,
        description="Converted packaged models, the teacher and the causal student (a cache worth sharing "
        "between data directories). Unset: {data_dir}/models.",
    )
    database_url: str | None = Field(
        default=None, description="Postgres (SQLAlchemy URL); `gold up` starts one and sets it."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis (the job queue and the generator's limits); `gold up` starts one and sets it.",
    )
    log_level: str = Field(default="INFO", description="Python logging level of the process.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text for a terminal; json: one JSON object a line, with run_id, iteration and stage "
        "on the lines the orchestrator logs while it runs a step.",
    )
    api_keys: dict[str, SecretStr] = Field(
        default={},
        description='Bearer tokens the HTTP services accept, as JSON {"team-name": "token"}. Empty: '
        "authentication disabled (`gold up` always generates one).",
    )
    admin_keys: list[str] = Field(
        default=["local"],
        description="Names of the keys above that see and manage every tenant's runs (JSON list); every "
        "other key sees only the runs it created. local is the key `gold up` generates for the operator.",
    )

    orchestrator_url: str = Field(
        default="http://127.0.0.1:8000", description="Where the orchestrator's API is."
    )
    generator_url: str = Field(
        default="http://127.0.0.1:8001",
        description="One generator, or several separated by commas: the orchestrator spreads its calls "
        "over the healthy ones.",
    )
    scorer_url: str = Field(default="http://127.0.0.1:8002", description="Where the scorer's API is.")
    service_token: SecretStr | None = Field(
        default=None,
        description="Token the orchestrator presents to the generator and scorer (one of their api_keys).",
    )
    allowed_student_models: list[str] = Field(
        default=DEFAULT_ALLOWED_STUDENTS,
        description="Student models (student.model) the trainer trains; the orchestrator refuses a run "
        "naming another (422).",
    )

    @field_validator("data_dir", "artifact_dir", "artifact_cache_dir", "model_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def artifacts(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    @property
    def artifact_cache(self) -> Path:
        return self.artifact_cache_dir or self.data_dir / "artifact-cache"

    @property
    def generator_urls(self) -> list[str]:
        return [url.strip().rstrip("/") for url in self.generator_url.split(",") if url.strip()]

    @property
    def models_dir(self) -> Path:
        return self.model_dir or self.data_dir / "models"

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("GOLD_DATABASE_URL is not set: start the stack with `gold up` or set it")
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError("GOLD_REDIS_URL is not set: start the stack with `gold up` or set it")
        return self.redis_url


@lru_cache
def get_settings() -> GoldSettings:
    return GoldSettings()
