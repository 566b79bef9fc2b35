"""Drives runs outside request handlers. A run is claimed with a lease in Postgres; completed steps
are skipped, so a restarted orchestrator (or another one, once the lease expires) resumes a run
from its last completed step."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from pydantic import ValidationError
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.context import RunCancelled, RunContext, StepFailed
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.plan import PlannedStep, build_plan, steps_past_plateau, steps_past_time_budget
from services.orchestrator.stages import STAGES, run_stage
from services.orchestrator.stages.records import iteration_row, mark_step
from services.orchestrator.tracking.outbox import mark_due
from shared.clients import GeneratorClient, ScorerClient
from shared.db.base import utcnow
from shared.db.models import Iteration, Metric, Run, Step
from shared.logging import log_context
from shared.names import (
    ACTIVE_RUN_STATUSES,
    FINISHED_STEP_STATUSES,
    IterationStatus,
    RunStatus,
    StepStatus,
    holdout_metric,
)
from shared.spec import RunSpec

logger = logging.getLogger(__name__)


class RunDriver:
    def __init__(
        self,
        settings: OrchestratorSettings,
        sessions: sessionmaker[Session],
        train_queue: Queue,
        generator: GeneratorClient,
        scorer: ScorerClient,
        metrics: OrchestratorMetrics | None = None,
    ):
        self.settings = settings
        self.metrics = metrics or OrchestratorMetrics()
        self.sessions = sessions
        self.train_queue = train_queue
        self.generator = generator
        self.scorer = scorer
        # Stable across restarts of the same instance, so it takes its own runs back at once.
        self.owner = f"{socket.gethostname()}:{settings.orchestrator_port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._calls = ThreadPoolExecutor(
            max_workers=4 * max(settings.concurrent_runs, 1), thread_name_prefix="upstream"
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._release_own_leases()
        for i in range(self.settings.concurrent_runs):
            thread = threading.Thread(target=self._work, name=f"run-driver-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._calls.shutdown(wait=False, cancel_futures=True)

    def _release_own_leases(self) -> None:
        try:
            with self.sessions() as session, session.begin():
                session.execute(
                    update(Run)
                    .where(Run.lease_owner == self.owner)
                    .values(lease_owner=None, lease_expires_at=None)
                )
        except OperationalError:
            logger.warning("database unavailable at start; leases expire on their own")

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                run_id = self._claim()
            except OperationalError as exc:
                logger.warning("database unavailable (%s); retrying", exc.__class__.__name__)
                run_id = None
            if run_id is None:
                self._stop.wait(self.settings.driver_poll_s)
                continue
            try:
                self.drive(run_id)
            except (OperationalError, RedisError):
                # Postgres or Redis went away mid-step: the step did not commit; the run is picked up
                # again (a train step finds its RQ job under its id and watches it on).
                logger.warning("run %s: database or Redis error, will resume", run_id, exc_info=True)
                self._stop.wait(2.0)
            except Exception as exc:  # a bug must fail its run, not stop the driver for every other
                logger.exception("run %s: unexpected error", run_id)
                self._fail(run_id, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                self._release(run_id)

    def _claim(self) -> uuid.UUID | None:
        now = utcnow()
        with self.sessions() as session, session.begin():
            run = session.scalar(
                select(Run)
                .where(
                    Run.status.in_(ACTIVE_RUN_STATUSES),
                    or_(Run.lease_owner.is_(None), Run.lease_expires_at < now),
                )
                .order_by(Run.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if run is None:
                return None
            run.lease_owner = self.owner
            run.lease_expires_at = now + timedelta(seconds=self.settings.lease_s)
            return run.id

    def _release(self, run_id: uuid.UUID) -> None:
        try:
            with self.sessions() as session, session.begin():
                session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.lease_owner == self.owner)
                    .values(lease_owner=None, lease_expires_at=None)
                )
        except OperationalError:
            logger.warning("run %s: could not release lease (database down); it expires", run_id)

    # -- one run -----------------------------------------------------------------------------
    def _heartbeat(self, run_id: uuid.UUID) -> None:
        if self._stop.is_set():
            raise RunCancelled("orchestrator shutting down")
        with self.sessions() as session, session.begin():
            run = session.get(Run, run_id, with_for_update=True)
            if run is None or run.status in (RunStatus.CANCELLING, RunStatus.CANCELLED):
                raise RunCancelled()
            run.lease_expires_at = utcnow() + timedelta(seconds=self.settings.lease_s)

    def drive(self, run_id: uuid.UUID) -> None:
        # Every record logged while the run is driven carries its id (and the step's iteration and
        # stage while a step runs): GOLD_LOG_FORMAT=json writes them as keys.
        with log_context(run_id=str(run_id)):
            self._drive(run_id)

    def _drive(self, run_id: uuid.UUID) -> None:
        with self.sessions() as session, session.begin():
            run = session.get(Run, run_id, with_for_update=True)
            if run is None or run.status not in ACTIVE_RUN_STATUSES:
                return
            if run.status == RunStatus.CANCELLING:
                self._finish(session, run, RunStatus.CANCELLED)
                return
            try:
                spec = RunSpec.model_validate(run.spec)
            except ValidationError as exc:  # stored by a version whose spec this one does not read
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                run.error = f"the stored run spec is not valid in this version of GOLD ({problems})"
                self._finish(session, run, RunStatus.FAILED)
                return
            if run.status == RunStatus.QUEUED:
                run.status, run.started_at = RunStatus.RUNNING, utcnow()
            # A wait of the previous driver (it stopped or died) starts over, patience and all.
            run.waiting_for, run.waiting_since = None, None
            self._track(session, run_id)
            started_at = run.started_at or utcnow()
            done = {
                (s.iteration, s.stage)
                for s in session.scalars(
                    select(Step).where(Step.run_id == run_id, Step.status.in_(FINISHED_STEP_STATUSES))
                )
            }
        ctx = RunContext(
            run_id=run_id,
            spec=spec,
            sessions=self.sessions,
            generator=self.generator,
            scorer=self.scorer,
            train_queue=self.train_queue,
            settings=self.settings,
            heartbeat=lambda: self._heartbeat(run_id),
            calls=self._calls,
            metrics=self.metrics,
        )
        plan = build_plan(spec)
        try:
            for index, step in enumerate(plan):
                if (step.iteration, step.stage) in done:
                    continue
                elapsed = (utcnow() - started_at).total_seconds()
                skipped = steps_past_time_budget(spec, plan, index, done, elapsed)
                reason = f"loop.max_seconds ({spec.loop.max_seconds} s) used after {elapsed:.0f} s"
                if not skipped and spec.loop.patience is not None:
                    history = self._holdout_history(run_id, spec, step.iteration)
                    skipped = steps_past_plateau(spec, plan, index, done, history)
                    reason = (
                        f"loop.patience: {holdout_metric(spec.task.type)} on generated data has not "
                        f"improved for {spec.loop.patience} iteration(s) "
                        f"({', '.join(f'{v:.3f}' for v in history)})"
                    )
                if skipped:
                    self._skip(ctx, skipped, reason)
                    done |= {(s.iteration, s.stage) for s in skipped}
                    continue
                with log_context(iteration=step.iteration, stage=step.stage.value):
                    ctx.heartbeat()
                    self._enter(run_id, step, index / len(plan))
                    ctx.begin_step(index / len(plan), 1 / len(plan))
                    started = time.monotonic()
                    logger.info(
                        "run %s: iteration %d %s: %s",
                        run_id,
                        step.iteration,
                        step.stage,
                        STAGES[step.stage].what,
                    )
                    run_stage(ctx, step)
                    self._record_time(
                        run_id, step, time.monotonic() - started, last_of_iteration(plan, index)
                    )
        except RunCancelled:
            if self._stop.is_set():
                return  # shutting down: the run stays active and resumes on the next start
            with self.sessions() as session, session.begin():
                self._finish(session, session.get(Run, run_id, with_for_update=True), RunStatus.CANCELLED)
            logger.info("run %s cancelled", run_id)
            return
        except StepFailed as exc:
            self._fail(run_id, str(exc))
            return
        except (OperationalError, RedisError):
            raise
        except Exception as exc:  # noqa: BLE001 - any other bug fails the run with its message, logged
            logger.exception("run %s failed", run_id)
            self._fail(run_id, f"{type(exc).__name__}: {exc}")
            return
        with self.sessions() as session, session.begin():
            self._finish(session, session.get(Run, run_id, with_for_update=True), RunStatus.SUCCEEDED)
        logger.info("run %s succeeded", run_id)

    def _holdout_history(self, run_id: uuid.UUID, spec: RunSpec, before: int) -> list[float]:
        """The loop student's score on held-out generated data, iterations 1 .. before-1."""
        with self.sessions() as session:
            rows = session.execute(
                select(Metric.iteration, Metric.value)
                .where(
                    Metric.run_id == run_id,
                    Metric.name == holdout_metric(spec.task.type),
                    Metric.iteration.between(1, before - 1),
                )
                .order_by(Metric.iteration)
            ).all()
        return [value for _, value in rows]

    def _skip(self, ctx: RunContext, skipped: list[PlannedStep], reason: str) -> None:
        """Mark the steps skipped in one transaction, so a resumed run never half-runs an iteration."""
        logger.info("run %s: %s; iterations %d+ skipped", ctx.run_id, reason, skipped[0].iteration)
        with self.sessions() as session, session.begin():
            for s in skipped:
                mark_step(session, ctx.run_id, s.iteration, s.stage, {"reason": reason}, StepStatus.SKIPPED)

    def _enter(self, run_id: uuid.UUID, step: PlannedStep, progress: float) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(
                    iteration=step.iteration,
                    stage=step.stage,
                    progress=round(progress, 4),
                    stage_progress=None,  # the step says its own, as it goes
                )
            )

    def _record_time(
        self, run_id: uuid.UUID, step: PlannedStep, seconds: float, closes_iteration: bool
    ) -> None:
        with self.sessions() as session, session.begin():
            it = iteration_row(session, run_id, step.iteration)
            it.timings = {**it.timings, step.stage: round(seconds, 3)}
            if closes_iteration:
                it.status, it.finished_at = IterationStatus.DONE, utcnow()
            self._track(session, run_id)

    def _track(self, session: Session, run_id: uuid.UUID) -> None:
        """With MLflow tracking on, what the caller commits is sent to MLflow after the commit, by
        the tracker (services/orchestrator/tracking): this only marks the run due, in the same
        transaction, so a step never waits for the tracking server."""
        if self.settings.mlflow_tracking_uri:
            mark_due(session, run_id)

    def _finish(self, session: Session, run: Run | None, status: RunStatus) -> None:
        if run is None:
            return
        run.status, run.finished_at = status, utcnow()
        run.waiting_for, run.waiting_since = None, None  # a failure's reason is in run.error
        run.stage_progress = None
        if status == RunStatus.SUCCEEDED:
            run.progress, run.stage = 1.0, "done"
        # Open iterations end with the run: done, failed or cancelled.
        session.execute(
            update(Iteration)
            .where(Iteration.run_id == run.id, Iteration.status == IterationStatus.RUNNING)
            .values(status=IterationStatus.DONE if status == RunStatus.SUCCEEDED else IterationStatus(status))
        )
        self._track(session, run.id)

    def _fail(self, run_id: uuid.UUID, message: str) -> None:
        logger.error("run %s failed: %s", run_id, message)
        with self.sessions() as session, session.begin():
            run = session.get(Run, run_id, with_for_update=True)
            if run is not None:
                run.error = message
                self._finish(session, run, RunStatus.FAILED)


def last_of_iteration(plan: list[PlannedStep], index: int) -> bool:
    return index + 1 == len(plan) or plan[index + 1].iteration != plan[index].iteration
