"""Trainer settings (env prefix GOLD_): the student allow-list and worker knobs."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.settings import GoldSettings

# The worker's pid, set by `python -m services.trainer` for its work horses, which exit when their
# worker is gone (see worker.py and jobs._exit_with_parent).
EXIT_WITH_PARENT_ENV = "GOLD_TRAINER_WORKER_PID"

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


class TrainerSettings(GoldSettings):
    allowed_student_models: list[str] = DEFAULT_ALLOWED_STUDENTS
    # CPU threads for torch (None: torch's default). The generator may share the cores.
    torch_threads: int | None = None
    # Target tokens for seq2seq students (the paper: 32 for labels and short answers).
    max_target_length: int = 64
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
