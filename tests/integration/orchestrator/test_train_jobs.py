"""The orchestrator's train-job loop against a real Redis and Postgres: the train stage enqueues an
RQ job, an in-process burst worker runs it (a stand-in job function that fails as told), and the
loop retries, gives up after train_attempts, or cancels the job when the run is cancelled."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from redis import Redis
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import select

from services.orchestrator import context
from services.orchestrator.context import RunCancelled, RunContext, StepFailed
from services.orchestrator.plan import PlannedStep
from services.orchestrator.service import create_run
from services.orchestrator.stages import run_stage
from services.orchestrator.stages import train as train_stage
from shared import jobs
from shared.db.models import Iteration, Run, Step
from shared.jobs import TRAIN_QUEUE, cancel_train, enqueue_train, train_job_id, train_queue
from shared.names import RunStatus, Stage
from shared.schemas.training import TrainJob, TrainResult
from shared.spec import RunSpec
from tests.support import stand_in_checkpoint

# What the stand-in job function does; set by the `trainer` fixture (the burst worker runs it in
# this process).
CALLS: list[dict[str, Any]] = []
SCRIPT: dict[str, Any] = {}


def stand_in_train(payload: dict[str, Any]) -> dict[str, Any]:
    """Fails its first SCRIPT["failures"] calls; then writes a checkpoint row like the trainer."""
    CALLS.append(payload)
    if SCRIPT.get("cancel_on_failure"):
        with SCRIPT["sessions"]() as session, session.begin():
            session.get(Run, uuid.UUID(payload["run_id"])).status = RunStatus.CANCELLING
    if len(CALLS) <= SCRIPT["failures"]:
        raise RuntimeError(f"CUDA out of memory (call {len(CALLS)})")
    job = TrainJob.model_validate(payload)
    checkpoint_id = uuid.uuid4()
    with SCRIPT["sessions"]() as session, session.begin():
        session.add(stand_in_checkpoint(job, checkpoint_id))
    return TrainResult(
        checkpoint_id=str(checkpoint_id), metrics={}, seconds=0.1, examples_per_second=1.0
    ).model_dump()


@pytest.fixture
def trainer(monkeypatch, session_factory) -> Iterator[dict[str, Any]]:
    monkeypatch.setattr(jobs, "TRAIN_FUNC", f"{__name__}.stand_in_train")
    CALLS.clear()
    SCRIPT.clear()
    SCRIPT.update(failures=0, sessions=session_factory)
    yield SCRIPT
    CALLS.clear()
    SCRIPT.clear()


@pytest.fixture
def run_context(spec, session_factory, orchestrator_settings, redis_url) -> Iterator[RunContext]:
    settings = orchestrator_settings.model_copy(update={"train_attempts": 3, "train_poll_s": 0.01})
    with session_factory() as session, session.begin():
        run_id = create_run(RunSpec.model_validate(spec), session=session, settings=settings).id
        session.get(Run, run_id).status = RunStatus.RUNNING
    redis = Redis.from_url(redis_url)
    queue = train_queue(redis)
    polls = []

    def heartbeat() -> None:
        """What the driver's heartbeat does (a cancelled run raises), then a burst worker runs
        whatever is queued. A loop that waits for ever (a job that never ends) fails the test."""
        polls.append(1)
        assert len(polls) < 100, "the train-job loop is still waiting"
        with session_factory() as session:
            if session.get(Run, run_id).status == RunStatus.CANCELLING:
                raise RunCancelled()
        SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)

    with ThreadPoolExecutor(max_workers=1) as calls:
        yield RunContext(
            run_id=run_id,
            spec=RunSpec.model_validate(spec),
            sessions=session_factory,
            generator=None,  # type: ignore[arg-type]  # the train stage calls neither service
            scorer=None,  # type: ignore[arg-type]
            train_queue=queue,
            settings=settings,
            heartbeat=heartbeat,
            calls=calls,
        )


TRAIN_1 = PlannedStep(1, Stage.TRAIN)


def _step(ctx: RunContext) -> Step | None:
    with ctx.sessions() as session:
        return session.get(Step, (ctx.run_id, 1, Stage.TRAIN))


def _rq_job(ctx: RunContext) -> Job:
    job = TrainJob(run_id=str(ctx.run_id), iteration=1, role="loop")
    return Job.fetch(train_job_id(job), connection=ctx.train_queue.connection, serializer=JSONSerializer)


def test_a_failed_training_job_is_run_again_and_its_student_recorded(run_context, trainer):
    trainer["failures"] = 1
    run_stage(run_context, TRAIN_1)
    assert len(CALLS) == 2
    registry = run_context.metrics.registry
    assert registry.get_sample_value("gold_orchestrator_retries_total", {"what": "train"}) == 1
    done = {"stage": "train", "outcome": "done"}
    assert registry.get_sample_value("gold_orchestrator_step_seconds_count", done) == 1
    step = _step(run_context)
    assert step is not None and step.status == "done"
    with run_context.sessions() as session:
        checkpoint = session.scalar(
            select(Iteration.checkpoint_id).where(Iteration.run_id == run_context.run_id)
        )
    assert str(checkpoint) == step.result["checkpoint_id"]


def test_a_training_job_that_keeps_failing_fails_the_step_after_train_attempts(run_context, trainer):
    trainer["failures"] = 99
    with pytest.raises(StepFailed) as failed:
        run_stage(run_context, TRAIN_1)
    # One retry layer: train_attempts jobs, not train_attempts x RQ's own retries.
    assert len(CALLS) == run_context.settings.train_attempts == 3
    registry = run_context.metrics.registry
    assert registry.get_sample_value("gold_orchestrator_retries_total", {"what": "train"}) == 2
    labels = {"stage": "train", "outcome": "failed"}
    assert registry.get_sample_value("gold_orchestrator_step_seconds_count", labels) == 1
    assert str(failed.value) == (
        "trainer: training failed 3 times; last error: RuntimeError: CUDA out of memory (call 3)"
    )
    assert _rq_job(run_context).retries_left is None
    assert _step(run_context) is None  # nothing marked: a resumed run trains again


def test_cancelling_the_run_cancels_the_training_job(run_context, trainer):
    # The run is cancelled while its first attempt fails: the second attempt is cancelled
    # before a worker takes it.
    trainer.update(failures=1, cancel_on_failure=True)
    with pytest.raises(RunCancelled):
        run_stage(run_context, TRAIN_1)
    assert len(CALLS) == 1
    assert _rq_job(run_context).get_status(refresh=True) == JobStatus.CANCELED
    # A cancelled step is not timed: it neither finished nor failed.
    assert "gold_orchestrator_step_seconds_count" not in run_context.metrics.render().decode()
    SimpleWorker([run_context.train_queue], connection=run_context.train_queue.connection).work(burst=True)
    assert len(CALLS) == 1  # a worker started later does not run the cancelled job
    assert _step(run_context) is None


def test_cancelling_a_started_job_stops_it_and_frees_its_worker(redis_url):
    """RQ's cancel() only keeps a queued job from starting: a started one ran to its end (seen:
    a cancelled NL4OPT run's loop student trained on for its 10 minutes, and the next run's jobs
    waited). A real TrainerWorker (burst: it exits once the queue is empty) runs a 2-minute job."""
    queue = train_queue(Redis.from_url(redis_url))
    rq_job = queue.enqueue("time.sleep", 120, job_id=f"train-{uuid.uuid4()}-1-loop")
    worker = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", redis_url,
         "--serializer", "rq.serializers.JSONSerializer",
         "--worker-class", "services.trainer.worker.TrainerWorker", TRAIN_QUEUE],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while rq_job.get_status(refresh=True) != JobStatus.STARTED:
            assert time.monotonic() < deadline, "the worker did not start the job"
            time.sleep(0.2)
        cancel_train(rq_job)
        assert worker.wait(timeout=30) == 0  # the job stopped, the queue is empty: the worker is free
        assert rq_job.get_status(refresh=True) in (JobStatus.STOPPED, JobStatus.CANCELED)
    finally:
        worker.kill()


def test_a_half_written_rq_record_does_not_stop_a_cancellation(redis_url):
    """What a worker's heartbeat landing after its execution record was removed leaves (seen when
    `gold eval` was stopped mid-training): a started job listing an execution whose hash has no
    created_at. RQ's cancel() raises KeyError on it, and the run FAILED where the shutdown should
    have left it to resume."""
    queue = train_queue(Redis.from_url(redis_url))
    rq_job = enqueue_train(queue, TrainJob(run_id=str(uuid.uuid4()), iteration=1, role="loop"))
    rq_job.set_status(JobStatus.STARTED)
    queue.connection.zadd(f"rq:executions:{rq_job.id}", {"stale": time.time() + 3600})
    queue.connection.hset(f"rq:execution:{rq_job.id}:stale", "last_heartbeat", time.time())
    with pytest.raises(KeyError):
        rq_job.cancel()
    cancel_train(rq_job)  # logged, not raised


def _waiting_for(ctx: RunContext) -> str | None:
    with ctx.sessions() as session:
        return session.get(Run, ctx.run_id).waiting_for


NO_WORKER = "trainer: no worker is taking jobs from the 'train' queue"


def test_a_job_no_worker_takes_waits_saying_so_then_fails_past_the_patience(run_context, trainer):
    """Every trainer worker dead (or none started): the job would sit queued for ever with the run
    running and nothing said. The run says what it waits for, then fails naming it, its job
    cancelled so that a worker started later does not train for a failed run."""
    seen: list[str | None] = []
    ctx = dataclasses.replace(
        run_context,
        settings=run_context.settings.model_copy(update={"dependency_patience_s": 1.0, "train_poll_s": 0.05}),
        heartbeat=lambda: seen.append(_waiting_for(ctx)),
    )
    with pytest.raises(StepFailed) as failed:
        run_stage(ctx, TRAIN_1)
    assert str(failed.value) == f"{NO_WORKER} (gave up after 1 s of waiting; GOLD_DEPENDENCY_PATIENCE_S)"
    assert seen and set(seen) == {NO_WORKER}
    assert _rq_job(ctx).get_status(refresh=True) == JobStatus.CANCELED
    SimpleWorker([ctx.train_queue], connection=ctx.train_queue.connection).work(burst=True)
    assert CALLS == []


def test_a_job_waits_for_a_worker_and_trains_when_one_comes(run_context, trainer):
    seen: list[str | None] = []

    def heartbeat() -> None:
        seen.append(_waiting_for(ctx))
        if len(seen) >= 5:  # a worker starts at last
            SimpleWorker(
                [ctx.train_queue], connection=ctx.train_queue.connection, serializer=JSONSerializer
            ).work(burst=True)

    ctx = dataclasses.replace(run_context, heartbeat=heartbeat)
    run_stage(ctx, TRAIN_1)
    assert seen[:5] == [NO_WORKER] * 5
    assert len(CALLS) == 1
    assert _waiting_for(ctx) is None  # cleared once the job ran
    step = _step(ctx)
    assert step is not None and step.status == "done"


def test_a_job_queued_while_a_worker_lives_is_not_an_outage(run_context, trainer):
    """Queued behind other runs' jobs, with a worker alive (busy elsewhere), is the queue doing
    its work: nothing to wait out, nothing shown."""
    queue = run_context.train_queue
    busy = SimpleWorker([queue], connection=queue.connection)
    busy.register_birth()
    seen: list[str | None] = []

    def heartbeat() -> None:
        seen.append(_waiting_for(ctx))
        if len(seen) >= 3:  # the job's turn
            SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer).work(burst=True)

    ctx = dataclasses.replace(run_context, heartbeat=heartbeat)
    try:
        run_stage(ctx, TRAIN_1)
    finally:
        busy.register_death()
    assert seen[:3] == [None] * 3 and len(CALLS) == 1


def report_epochs(payload: dict[str, Any]) -> dict[str, Any]:
    """A stand-in job that reports as the trainer's job does after its second epoch of four."""
    from services.trainer.jobs import _report_epoch

    _report_epoch(2, 4)
    return {}


def test_the_epochs_the_trainer_reports_show_on_the_run_every_few_seconds(run_context, monkeypatch):
    queue = run_context.train_queue
    rq_job = queue.enqueue(f"{__name__}.report_epochs", {})
    SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer).work(burst=True)
    run_context.begin_step(0.5, 0.25)  # the step spans [50%, 75%] of the run
    train_stage._show_epochs(run_context, rq_job)

    def shown() -> tuple[str | None, float]:
        with run_context.sessions() as session:
            run = session.get(Run, run_context.run_id)
            return run.stage_progress, run.progress

    assert shown() == ("2 of 4 epochs", 0.625)
    rq_job.meta.update(epoch=3)
    rq_job.save_meta()
    train_stage._show_epochs(run_context, rq_job)
    assert shown() == ("2 of 4 epochs", 0.625)  # seconds after the last write: none yet
    monkeypatch.setattr(context, "PROGRESS_EVERY_S", 0.0)
    train_stage._show_epochs(run_context, rq_job)
    assert shown() == ("3 of 4 epochs", 0.6875)
