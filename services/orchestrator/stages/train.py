"""Training stages: the loop's student, the final student, the supervised reference and the
student's few-shot baseline, each an RQ job run by a trainer worker, watched here."""

from __future__ import annotations

import logging
import time
import uuid
from functools import partial

from rq import Worker
from rq.job import Job, JobStatus
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.orchestrator.context import Patience, RunCancelled, RunContext, StepFailed
from services.orchestrator.stages.done import Done
from services.orchestrator.stages.records import iteration_row
from shared.db.models import Iteration
from shared.jobs import cancel_train, enqueue_train
from shared.schemas.training import TrainJob, TrainResult, TrainRole

logger = logging.getLogger(__name__)
ENDED = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def train(ctx: RunContext, iteration: int, role: TrainRole) -> Done:
    init = None
    if role == "loop" and ctx.spec.student.continue_training and iteration > 1:
        with ctx.sessions() as session:
            previous = session.scalar(
                select(Iteration.checkpoint_id).where(
                    Iteration.run_id == ctx.run_id, Iteration.index == iteration - 1
                )
            )
        init = str(previous) if previous else None
    job = TrainJob(run_id=str(ctx.run_id), iteration=iteration, role=role, init_checkpoint_id=init)
    result = run_train_job(ctx, job)

    def write(session: Session) -> None:
        # the reference and few-shot students are yardsticks, not the iteration's student
        if role in ("loop", "final"):
            iteration_row(session, ctx.run_id, iteration).checkpoint_id = uuid.UUID(result.checkpoint_id)

    return Done(result.model_dump(), write)


train_loop = partial(train, role="loop")
train_final = partial(train, role="final")
train_reference = partial(train, role="reference")
student_fewshot = partial(train, role="fewshot")


def run_train_job(ctx: RunContext, job: TrainJob) -> TrainResult:
    """Run the job, with up to settings.train_attempts attempts, each a fresh RQ job.

    This loop is the ONE retry layer of training (the job is enqueued without RQ's Retry): the
    orchestrator has to watch every attempt anyway, to stay cancellable and to name the last
    error, and its setting is the one place the count is set. RQ's Retry under this loop would
    multiply the two (a deterministic failure trained 3 x 3 times), and its delayed retries are
    invisible here. A worker killed mid-job counts as one failed attempt: RQ marks the abandoned
    job failed and this loop enqueues it again. A job that waits with no worker alive to take it
    is a trainer outage, waited out like any service's (_wait_for_a_worker)."""
    last_error = "unknown"
    patience = ctx.patience()
    for attempt in range(1, ctx.settings.train_attempts + 1):
        if attempt > 1:
            ctx.metrics.retries.labels("train").inc()
        rq_job = enqueue_train(ctx.train_queue, job)
        while True:
            status = rq_job.get_status(refresh=True)
            if status == JobStatus.FINISHED:
                ctx.show_waiting(None)
                return TrainResult.model_validate(rq_job.return_value())
            if status in ENDED or status is None:
                last_error = (rq_job.exc_info or "job lost").strip().splitlines()[-1]
                logger.warning("run %s: training attempt %d failed: %s", ctx.run_id, attempt, last_error)
                break
            if status == JobStatus.STARTED:
                _show_epochs(ctx, rq_job)
            try:
                _wait_for_a_worker(ctx, patience, status)
                ctx.heartbeat()
            except (RunCancelled, StepFailed):
                cancel_train(rq_job)  # a job left queued would train when a worker comes, for nothing
                raise
            time.sleep(ctx.settings.train_poll_s)
    raise StepFailed(
        f"trainer: training failed {ctx.settings.train_attempts} times; last error: {last_error}"
    )


def _show_epochs(ctx: RunContext, rq_job: Job) -> None:
    """The epochs the job has trained, as the trainer reports them in job.meta (epoch, epochs:
    services/trainer/jobs.py _report), on the run (ctx.show_progress writes every few seconds)."""
    meta = rq_job.get_meta(refresh=True)
    epoch, epochs = meta.get("epoch"), meta.get("epochs")
    if isinstance(epoch, int) and isinstance(epochs, int) and epochs > 0:
        ctx.show_progress(epoch, epochs, "epochs")


def _wait_for_a_worker(ctx: RunContext, patience: Patience, status: JobStatus | None) -> None:
    """A queued job with no live worker on its queue is a trainer outage (every worker died, or
    none was started): shown on the run, and the step fails past the patience. Queued behind
    other runs' jobs, with workers alive, is not: that wait is the queue doing its work."""
    if status == JobStatus.QUEUED and not Worker.all(queue=ctx.train_queue):
        reason = f"trainer: no worker is taking jobs from the {ctx.train_queue.name!r} queue"
        patience.down(reason)
        ctx.show_waiting(reason)
    else:
        patience.up()
        ctx.show_waiting(None)
