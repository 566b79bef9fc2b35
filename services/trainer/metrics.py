"""The trainer worker's Prometheus metrics, served by the worker process on
GOLD_TRAINER_METRICS_PORT (off when unset).

Jobs run in work horses, separate processes that end with their job, so the horses count nothing:
the worker process reads each job's outcome and result from Redis once its horse has exited
(TrainerWorker.execute_job), and its own registry is what a scrape sees. No multiprocess files, no
counts lost with a horse killed mid-job (RQ marks that job failed, and the worker counts it)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from rq.exceptions import InvalidJobOperation
from rq.job import Job

logger = logging.getLogger(__name__)

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "gold_trainer_jobs",
            "training jobs this worker ran, by how they ended (finished, failed, stopped)",
            ["status"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "gold_trainer_job_seconds",
            "wall time of a training job, work horse start to exit",
            ["status"],
            registry=self.registry,
            buckets=JOB_BUCKETS,
        )
        self.examples_per_second = Gauge(
            "gold_trainer_examples_per_second",
            "training examples per second of the last job that trained (a reused checkpoint does not count)",
            registry=self.registry,
        )

    def record(self, job: Job, seconds: float) -> None:
        """Count a job whose work horse has exited, from what the horse stored in Redis."""
        try:
            label = job.get_status(refresh=True).value
        except InvalidJobOperation:  # deleted meanwhile (the orchestrator deletes failed attempts)
            label = "lost"
        self.jobs.labels(label).inc()
        self.job_seconds.labels(label).observe(seconds)
        if label != "finished":
            return
        result: Any = job.return_value(refresh=True)
        if isinstance(result, dict) and not (result.get("extra") or {}).get("reused"):
            rate = result.get("examples_per_second")
            if isinstance(rate, int | float) and rate > 0:
                self.examples_per_second.set(rate)


@contextmanager
def serve_metrics(metrics: TrainerMetrics, host: str, port: int | None) -> Iterator[int | None]:
    """Serve /metrics on host:port for the duration (port 0: a free one); yields the port."""
    if port is None:
        yield None
        return
    server, thread = start_http_server(port, host, registry=metrics.registry)
    logger.info("trainer metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
