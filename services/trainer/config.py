"""Trainer settings (env prefix GOLD_): the student allow-list and worker knobs."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.settings import GoldSettings

# The worker's pid, set by `python -m services.trainer` for its work horses, which exit when their
# worker is gone (see worker.py and jobs._exit_with_parent).
EXIT_WITH_PARENT_ENV = "GOLD_TRAINER_WORKER_PID"


class TrainerSettings(GoldSettings):
    # The generator may share the cores.
    torch_threads: int | None = Field(
        default=None, description="CPU threads for torch. Unset: torch's default."
    )
    final_max_epochs: int | None = Field(
        default=None,
        description="Epoch budget of fresh (final and reference) students. Unset: the spec's "
        "student.final_epochs.",
    )
    final_patience: int = Field(
        default=2,
        description="Early stopping of fresh students: epochs without improvement on held-out data.",
    )
    # Below it their accuracy is noise.
    final_min_holdout: int = Field(
        default=20, ge=1, description="Fewer held-out examples than this: no early stopping."
    )
    eval_batch_size: int = Field(default=64, description="Batch size when the trainer measures a student.")
    trainer_processes: int = Field(
        default=1,
        ge=1,
        description="Processes per training job: more than 1 trains data-parallel with torch.distributed, "
        "one process per GPU (nccl) or CPU processes (gloo); student.batch_size is per process.",
    )
    worker_maintenance_interval_s: int = Field(
        default=60,
        description="How often the worker looks for abandoned jobs (a worker killed mid-job), in seconds.",
    )
    # RQ's default 420 s would delay the rescue of an abandoned job by up to 7 minutes.
    worker_ttl_s: int = Field(
        default=60,
        description="The worker's heartbeat TTL; an idle worker blocks on the queue for worker_ttl_s - 15 s "
        "between maintenance checks.",
    )
    worker_name: str | None = Field(default=None, description="The worker's RQ name. Unset: RQ picks one.")
    trainer_metrics_port: int | None = Field(
        default=None,
        description="Serve the worker's Prometheus metrics (jobs, examples/s) on http://host:port/metrics. "
        "Unset: not served.",
    )
    trainer_metrics_host: str = Field(
        default="127.0.0.1", description="Address of the worker's metrics server."
    )


@lru_cache
def get_trainer_settings() -> TrainerSettings:
    return TrainerSettings()
