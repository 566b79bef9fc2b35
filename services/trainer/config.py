"""Trainer settings (env prefix GOLD_): the student allow-list and worker knobs."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.settings import GoldSettings

# The worker's pid, set by `python -m services.trainer` for its work horses, which exit when their
# worker is gone (see worker.py and jobs._exit_with_parent).
EXIT_WITH_PARENT_ENV = "GOLD_TRAINER_WORKER_PID"


class TrainerSettings(GoldSettings):
    # CPU threads for torch (None: torch's default). The generator may share the cores.
    torch_threads: int | None = None
    # Final student: epoch budget (None: the spec's student.epochs) and early-stopping patience.
    final_max_epochs: int | None = None
    final_patience: int = 2
    # Fewer held-out examples than this: no early stopping (their accuracy is noise).
    final_min_holdout: int = Field(default=20, ge=1)
    eval_batch_size: int = 64
    # Processes per training job (GOLD_TRAINER_PROCESSES): > 1 trains data-parallel with
    # torch.distributed, one process per GPU (nccl) or CPU processes (gloo); see distributed.py.
    # student.batch_size is per process.
    trainer_processes: int = Field(default=1, ge=1)
    # Worker: how often abandoned jobs (a worker killed mid-job) are looked for, in seconds.
    worker_maintenance_interval_s: int = 60
    # An idle worker blocks on the queue for worker_ttl - 15 s between maintenance checks (RQ's
    # default 420 s would delay the rescue of an abandoned job by up to 7 minutes).
    worker_ttl_s: int = 60
    worker_name: str | None = None
    # The worker's Prometheus metrics (jobs, examples/s) on http://host:port/metrics; unset: not served.
    trainer_metrics_port: int | None = None
    trainer_metrics_host: str = "127.0.0.1"


@lru_cache
def get_trainer_settings() -> TrainerSettings:
    return TrainerSettings()
