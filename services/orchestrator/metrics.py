"""The orchestrator's Prometheus metrics: the HTTP ones every service has, how long steps take by
stage, retries, and (read from Postgres and Redis at scrape time, so every orchestrator process
answers the same) runs by status and the depth of the train queue."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Run
from shared.metrics import ServiceMetrics
from shared.names import RunStatus

logger = logging.getLogger(__name__)

# Steps take from milliseconds (select) to hours (the final student on a GPU).
STEP_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)


class OrchestratorMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("orchestrator")
        self.step_seconds = Histogram(
            "gold_orchestrator_step_seconds",
            "duration of a run's steps by stage; outcome done or failed (a cancelled step is not counted)",
            ["stage", "outcome"],
            registry=self.registry,
            buckets=STEP_BUCKETS,
        )
        self.retries = Counter(
            "gold_orchestrator_retries",
            "attempts beyond the first: training jobs (what=train) and service calls (what=generator|scorer)",
            ["what"],
            registry=self.registry,
        )
        self._state: StateCollector | None = None

    def observe_step(self, stage: str, outcome: str, seconds: float) -> None:
        self.step_seconds.labels(stage, outcome).observe(seconds)

    def watch(self, sessions: sessionmaker[Session], queue: Queue) -> None:
        """Read runs by status and the queue depth on every scrape, from these."""
        self.unwatch()
        self._state = StateCollector(sessions, queue)
        self.registry.register(self._state)

    def unwatch(self) -> None:
        if self._state is not None:
            self.registry.unregister(self._state)
            self._state = None


class StateCollector(Collector):
    """Gauges read at scrape time; a store that does not answer leaves its gauge out of the scrape
    (the scrape itself still succeeds, and /readyz names what is down)."""

    def __init__(self, sessions: sessionmaker[Session], queue: Queue):
        self.sessions = sessions
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs = GaugeMetricFamily("gold_orchestrator_runs", "runs by status", labels=["status"])
        try:
            counts = self._runs_by_status()
        except SQLAlchemyError as exc:
            logger.warning("metrics: runs by status not read (%s)", type(exc).__name__)
        else:
            for status in RunStatus:
                runs.add_metric([status.value], counts.get(status.value, 0))
            yield runs
        try:
            depth = self.queue.count
        except RedisError as exc:
            logger.warning("metrics: train queue depth not read (%s)", type(exc).__name__)
        else:
            yield GaugeMetricFamily(
                "gold_orchestrator_train_queue_depth",
                "training jobs waiting for a trainer worker",
                value=depth,
            )

    def _runs_by_status(self) -> dict[str, int]:
        with self.sessions() as session:
            session.execute(text("SET LOCAL statement_timeout = 5000"))  # a scrape never hangs on a lock
            rows = session.execute(select(Run.status, func.count()).group_by(Run.status)).all()
        return {str(status): int(count) for status, count in rows}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # collected at scrape time only, never at registration
