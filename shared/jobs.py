"""Queue names, job names and payload contracts. Jobs are enqueued by dotted name (no imports of
the service that runs them) with JSON payloads, and deterministic ids so a re-submit is idempotent."""

from __future__ import annotations

import contextlib
import logging

from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from shared.schemas.training import TrainJob

logger = logging.getLogger(__name__)

TRAIN_QUEUE = "train"
TRAIN_FUNC = "services.trainer.jobs.train_student"
TRAIN_TIMEOUT_S = 4 * 3600


def train_queue(redis: Redis) -> Queue:
    return Queue(TRAIN_QUEUE, connection=redis, serializer=JSONSerializer)


def train_job_id(job: TrainJob) -> str:
    return f"train-{job.run_id}-{job.iteration}-{job.role}"


def cancel_train(rq_job: Job) -> None:
    """Cancel a training job and stop it where a worker runs it: RQ's cancel() only keeps a queued
    job from starting, and a started one trained on to its end (20 minutes of a CPU trainer), its
    worker held from the next run's jobs. As far as RQ's records allow: while a stack stops, a job's
    execution record can be half written (a worker's heartbeat landing after the record was removed
    leaves a hash without created_at: a KeyError inside RQ 3) or gone (ValueError). The run's
    cancellation, or the orchestrator's shutdown, must not become the run's failure over it; a job
    left behind is requeued or replaced by enqueue_train when the run resumes."""
    with contextlib.suppress(InvalidJobOperation, NoSuchJobError):  # no worker runs it (any more)
        if rq_job.get_status(refresh=True) == JobStatus.STARTED:
            send_stop_job_command(rq_job.connection, rq_job.id, serializer=JSONSerializer)
    try:
        rq_job.cancel()
    except (KeyError, ValueError) as exc:
        logger.warning("training job %s: RQ could not cancel it (%r); left to enqueue_train", rq_job.id, exc)


def enqueue_train(queue: Queue, job: TrainJob) -> Job:
    """Enqueue (or find) the training job for (run, iteration, role). No RQ Retry: the
    orchestrator's attempts (train_attempts) are the one retry layer of training."""
    job_id = train_job_id(job)
    existing = queue.fetch_job(job_id)
    status = existing.get_status(refresh=True) if existing is not None else None
    if existing is not None and status not in ("failed", "stopped", "canceled"):
        return existing
    if existing is not None and status in ("failed", "stopped"):
        # Back on the queue under its id. Not delete() + enqueue: RQ 3 drops the execution record of
        # an abandoned job (its worker was killed), and delete() then raises looking for it.
        with contextlib.suppress(InvalidJobOperation):  # not in the failed registry (expired): anew
            return existing.requeue()
    if existing is not None:
        with contextlib.suppress(ValueError):  # the same missing execution record
            existing.delete()
        queue.connection.delete(existing.key)
    return queue.enqueue(
        TRAIN_FUNC,
        job.model_dump(),
        job_id=job_id,
        job_timeout=TRAIN_TIMEOUT_S,
        result_ttl=7 * 24 * 3600,
        failure_ttl=7 * 24 * 3600,
    )
