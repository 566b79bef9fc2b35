"""The trainer worker: RQ SpawnWorker on the "train" queue, JSON serializer, counting its jobs for
Prometheus (services/trainer/metrics.py).

Why SpawnWorker (RQ 3.0, read from rq/worker/*.py and rq/registry.py):
- Every job runs in a fresh interpreter started with posix_spawn, so no CUDA state ever crosses a
  fork and GPU memory is returned when the job ends. The parent never imports torch.
- The parent monitors the work horse and heartbeats the job every `job_monitoring_interval` (30 s)
  with a TTL of ~90 s in the StartedJobRegistry. A SimpleWorker cannot heartbeat while it trains:
  its registry entry lives for job_timeout + 60 s (4 h here), so a killed SimpleWorker's job would
  be noticed only hours later.
- Work horse killed (kill -9, OOM): the parent sees it at once and fails the job through
  handle_job_failure. Jobs carry no RQ Retry: the orchestrator's train_attempts loop
  (services/orchestrator/stages/train.py) is the one retry layer and enqueues a fresh attempt.
- Whole worker killed (kill -9): RQ 3.0's StartedJobRegistry.cleanup() treats a job whose
  heartbeat expired while STARTED as abandoned and fails it (older RQ versions left it in the
  started registry). Cleanup runs in the maintenance of any worker of the queue: at its start and
  every `maintenance_interval` (60 s here, RQ's default is 10 min; and an idle worker only checks
  between blocking dequeues of worker_ttl - 15 s, so worker_ttl is 60 s here, not 420). So with a
  restarted (or a second) worker the orchestrator sees the failure within ~90 s + 60 s and
  enqueues the next attempt. The orphaned horse notices that its worker is gone and exits
  (jobs._exit_with_parent).
  Measured here (with RQ's retry, before the orchestrator's loop became the only layer): kill -9 of
  the worker mid-job, new worker started 5 s later: the job ran again and finished."""

from __future__ import annotations

import logging
import os
import time

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import Queue, SpawnWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from services.trainer.config import EXIT_WITH_PARENT_ENV, TrainerSettings
from services.trainer.metrics import TrainerMetrics, serve_metrics
from shared.jobs import train_queue
from shared.parent_death import die_with_parent

logger = logging.getLogger(__name__)
# Reconnect attempts per Redis command: with backoff capped at 5 s, about a minute in all.
REDIS_RETRIES = 14


class TrainerWorker(SpawnWorker):
    """A SpawnWorker that counts the jobs its work horses ran (services/trainer/metrics.py). The
    horse re-creates this class from Redis (it must stay importable, with RQ's constructor);
    `metrics` is set on the worker process's instance only."""

    metrics: TrainerMetrics | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        started = time.monotonic()
        try:
            super().execute_job(job, queue)
        finally:
            if self.metrics is not None:
                try:
                    self.metrics.record(job, time.monotonic() - started)
                except RedisError as exc:  # a lost count must not stop the worker
                    logger.warning("metrics: job %s not counted (%s)", job.id, exc)


def patient_redis(url: str) -> Redis:
    """A client patient with a Redis restart (about a minute): RQ's own reconnect covers only its
    dequeue loop, and a command failing while it watches a training horse ends the worker."""
    return Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=5.0, base=0.5), REDIS_RETRIES))


def make_worker(settings: TrainerSettings, redis: Redis) -> TrainerWorker:
    worker = TrainerWorker(
        [train_queue(redis)],
        connection=redis,
        serializer=JSONSerializer,
        name=settings.worker_name,
        maintenance_interval=settings.worker_maintenance_interval_s,
        worker_ttl=settings.worker_ttl_s,
    )
    worker.metrics = TrainerMetrics()
    return worker


def run_worker(settings: TrainerSettings, burst: bool = False) -> bool:
    os.environ[EXIT_WITH_PARENT_ENV] = str(os.getpid())  # inherited by every spawned work horse
    # every child this process forks dies with it (horses are spawned, not forked)
    os.register_at_fork(after_in_child=die_with_parent)
    if settings.torch_threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(settings.torch_threads))
    redis = patient_redis(settings.require_redis_url())
    settings.require_database_url()  # fail at start, not in the first job
    worker = make_worker(settings, redis)
    assert worker.metrics is not None
    with serve_metrics(worker.metrics, settings.trainer_metrics_host, settings.trainer_metrics_port):
        logger.info(
            "trainer worker %s on queue %r (artifacts: %s)",
            worker.name,
            worker.queues[0].name,
            settings.artifacts_url or settings.artifacts,
        )
        return worker.work(burst=burst, logging_level=settings.log_level.upper())
