"""Queue names, job names and payload contracts. Jobs are enqueued by dotted name (no imports of
the service that runs them) with JSON payloads, and deterministic ids so a re-submit is idempotent."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.schemas.training import TrainJob

TRAIN_QUEUE = "train"
TRAIN_FUNC = "services.trainer.jobs.train_student"
TRAIN_TIMEOUT_S = 4 * 3600


def train_queue(redis: Redis) -> Queue:
    return Queue(TRAIN_QUEUE, connection=redis, serializer=JSONSerializer)


def train_job_id(job: TrainJob) -> str:
    return f"train-{job.run_id}-{job.iteration}-{job.role}"


def enqueue_train(queue: Queue, job: TrainJob) -> Job:
    """Enqueue (or find) the training job for (run, iteration, role). No RQ Retry: the
    orchestrator's attempts (train_attempts) are the one retry layer of training."""
    job_id = train_job_id(job)
    existing = queue.fetch_job(job_id)
    if existing is not None and existing.get_status(refresh=True) not in ("failed", "stopped", "canceled"):
        return existing
    if existing is not None:
        existing.delete()
    return queue.enqueue(
        TRAIN_FUNC,
        job.model_dump(),
        job_id=job_id,
        job_timeout=TRAIN_TIMEOUT_S,
        result_ttl=7 * 24 * 3600,
        failure_ttl=7 * 24 * 3600,
    )
