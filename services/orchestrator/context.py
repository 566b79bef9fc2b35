"""What every stage of a run gets: the run, its spec, the services, and cancellable calls that wait
out a service's outage."""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rq import Queue
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.metrics import OrchestratorMetrics
from shared.clients import GeneratorClient, ScorerClient
from shared.db.base import utcnow
from shared.db.models import Run
from shared.errors import UpstreamError
from shared.spec import RunSpec

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Backoff between attempts while a service is down: 1, 2, 4 ... 20 s.
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 20.0
WAITING_FOR_CHARS = 1000
# A step's progress is written at most this often: a poller sees it move, Postgres gets no write per row.
PROGRESS_EVERY_S = 3.0


class RunCancelled(Exception):
    pass


class StepFailed(Exception):
    """A step failed for good: the run fails with this message."""


class Patience:
    """One step's wait for a service that is down. An overloaded or restarting dependency is normal
    (a generator reloading its engine answers 503 for minutes): the step waits, for `patience_s`
    from the first failure of this outage, then fails naming the last reason."""

    def __init__(self, patience_s: float, clock: Callable[[], float] = time.monotonic):
        self.patience_s = patience_s
        self.clock = clock
        self.since: float | None = None

    def down(self, reason: str) -> float:
        """The service is down for `reason`: how many more seconds the step may wait for it;
        StepFailed when none are left."""
        now = self.clock()
        if self.since is None:
            self.since = now
        waited = now - self.since
        if waited >= self.patience_s:
            raise StepFailed(
                f"{reason} (gave up after {self.patience_s:.0f} s of waiting; GOLD_DEPENDENCY_PATIENCE_S)"
            )
        return self.patience_s - waited

    def up(self) -> None:
        self.since = None


def call_patiently(
    attempt: Callable[[], T],
    patience: Patience,
    waiting: Callable[[UpstreamError, int], None],
    sleep: Callable[[float], None],
) -> T:
    """`attempt()` until it answers. A failure that is the service's (UpstreamError.retryable:
    unreachable, timed out, 5xx, 408, 429) is waited out with backoff, `waiting(error, attempt)`
    told before each wait, until `patience` runs out; one that is the request's own (another 4xx)
    fails the step at once: asking again would get the same answer."""
    tries = 0
    while True:
        tries += 1
        try:
            result = attempt()
        except UpstreamError as exc:
            if not exc.retryable:
                raise StepFailed(exc.message) from exc
            left = patience.down(exc.message)
            waiting(exc, tries)
            sleep(min(BACKOFF_MIN_S * 2 ** (tries - 1), BACKOFF_MAX_S, left))
        else:
            patience.up()
            return result


@dataclass
class RunContext:
    run_id: uuid.UUID
    spec: RunSpec
    sessions: sessionmaker[Session]
    generator: GeneratorClient
    scorer: ScorerClient
    train_queue: Queue
    settings: OrchestratorSettings
    # Called often while waiting: renews the run's lease, raises RunCancelled when cancelled.
    heartbeat: Callable[[], None]
    # Runs service calls so the driver can keep heart-beating (and notice a cancel) meanwhile.
    calls: ThreadPoolExecutor
    # Step durations and retries; the app's registry when the driver runs in the orchestrator.
    metrics: OrchestratorMetrics = field(default_factory=OrchestratorMetrics)
    # The share of the run's progress the running step spans (the driver sets it as each step
    # begins): show_progress moves run.progress inside it.
    step_span: tuple[float, float] = (0.0, 0.0)
    # What the run's record says it waits for (show_waiting), so it is written only when it changes.
    _waiting_for: str | None = field(default=None, init=False)
    _progress_shown: tuple[str, float] | None = field(default=None, init=False)  # (text, when)

    def call(self, fn: Callable[[Any], T], request: Any) -> T:
        """Call a service, waiting out its outages (call_patiently), staying cancellable."""
        result = call_patiently(
            lambda: _cancellable(self, fn, request),
            self.patience(),
            self._retrying,
            self.sleep,
        )
        self.show_waiting(None)
        return result

    def patience(self) -> Patience:
        return Patience(self.settings.dependency_patience_s)

    def sleep(self, seconds: float) -> None:
        """Sleep, heart-beating: a run cancelled (or an orchestrator stopping) while a service is
        down ends its wait within a second."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.heartbeat()
            time.sleep(min(1.0, left))

    def show_waiting(self, reason: str | None) -> None:
        """Store on the run what its step waits for (GET /runs/{id} and `gold` show it), since
        when; None: nothing any more."""
        if reason is not None:
            reason = reason[:WAITING_FOR_CHARS]
        if reason == self._waiting_for:
            return
        values: dict[str, Any] = {"waiting_for": reason}
        if reason is None or self._waiting_for is None:  # a wait begins or ends; not a new reason
            values["waiting_since"] = utcnow() if reason is not None else None
        with self.sessions() as session, session.begin():
            session.execute(update(Run).where(Run.id == self.run_id).values(**values))
        if reason is None:
            logger.info("run %s: no longer waiting", self.run_id)
        self._waiting_for = reason

    def show_progress(self, done: int, total: int, what: str) -> None:
        """Store how far the running step has got ("64 of 500 rows answered": done, total, what),
        and move run.progress within the step's span: at most every PROGRESS_EVERY_S, so a step
        may call it for every batch; a call skipped leaves the next one to say more."""
        text = f"{done} of {total} {what}"
        now = time.monotonic()
        shown = self._progress_shown
        if shown is not None and (shown[0] == text or now - shown[1] < PROGRESS_EVERY_S):
            return
        start, width = self.step_span
        progress = start + width * min(done / total, 1.0) if total > 0 else start
        with self.sessions() as session, session.begin():
            session.execute(
                update(Run)
                .where(Run.id == self.run_id)
                .values(stage_progress=text, progress=round(progress, 4))
            )
        self._progress_shown = (text, now)

    def begin_step(self, start: float, width: float) -> None:
        """A new step spans [start, start + width] of the run's progress and has shown none yet."""
        self.step_span, self._progress_shown = (start, width), None

    def _retrying(self, error: UpstreamError, attempt: int) -> None:
        self.metrics.retries.labels(error.service).inc()
        log = logger.warning if error.message[:WAITING_FOR_CHARS] != self._waiting_for else logger.info
        log("run %s: %s (attempt %d); waiting for %s", self.run_id, error, attempt, error.service)
        self.show_waiting(error.message)


def _cancellable(ctx: RunContext, fn: Callable[[Any], T], request: Any) -> T:
    # In a copy of this context: the call's log records carry the step's run, iteration and stage.
    future = ctx.calls.submit(contextvars.copy_context().run, fn, request)
    while True:
        try:
            return future.result(timeout=1.0)
        except FutureTimeout:
            ctx.heartbeat()  # raises RunCancelled; the abandoned call's answer is ignored
