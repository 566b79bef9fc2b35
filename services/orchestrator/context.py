"""What every stage of a run gets: the run, its spec, the services, and cancellable calls."""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rq import Queue
from sqlalchemy.orm import Session, sessionmaker
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.metrics import OrchestratorMetrics
from shared.clients import GeneratorClient, ScorerClient
from shared.errors import UpstreamError
from shared.spec import RunSpec

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RunCancelled(Exception):
    pass


class StepFailed(Exception):
    """A step failed for good: the run fails with this message."""


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

    def call(self, fn: Callable[[Any], T], request: Any) -> T:
        """Call a service with retries and backoff until the deadline, staying cancellable."""

        def attempt() -> T:
            return _cancellable(self, fn, request)

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, UpstreamError) and e.retryable),
            wait=wait_exponential(multiplier=1, min=1, max=20),
            stop=stop_after_delay(self.settings.upstream_deadline_s),
            before_sleep=self._retrying,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except UpstreamError as exc:
            if exc.retryable:
                raise StepFailed(
                    f"{exc.message} (gave up after {self.settings.upstream_deadline_s:.0f} s)"
                ) from exc
            raise StepFailed(exc.message) from exc

    def _retrying(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self.metrics.retries.labels(getattr(error, "service", "other")).inc()
        logger.warning("run %s: %s (attempt %d), retrying", self.run_id, error, state.attempt_number)


def _cancellable(ctx: RunContext, fn: Callable[[Any], T], request: Any) -> T:
    # In a copy of this context: the call's log records carry the step's run, iteration and stage.
    future = ctx.calls.submit(contextvars.copy_context().run, fn, request)
    while True:
        try:
            return future.result(timeout=1.0)
        except FutureTimeout:
            ctx.heartbeat()  # raises RunCancelled; the abandoned call's answer is ignored
