"""The trainer worker's Prometheus metrics: a real SpawnWorker (each job in a spawned work horse)
in burst mode on a real Redis, scraped over HTTP. Stand-in job functions (importable by the horse)
keep it to seconds; the job's counting does not depend on what the job trains."""

from __future__ import annotations

import urllib.request
from typing import Any

from redis import Redis

from services.trainer.config import TrainerSettings
from services.trainer.metrics import serve_metrics
from services.trainer.worker import make_worker
from shared.jobs import train_queue
from tests.integration.orchestrator.test_health_and_metrics import samples


def finishes(payload: dict[str, Any]) -> dict[str, Any]:
    return {"checkpoint_id": "c", "metrics": {}, "seconds": 2.0, "examples_per_second": payload["rate"]}


def reuses(payload: dict[str, Any]) -> dict[str, Any]:
    """A job whose checkpoint existed already: its rate is not this worker's throughput."""
    return {**finishes({"rate": 1.0}), "extra": {"reused": True}}


def fails(payload: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("CUDA out of memory")


def test_worker_serves_jobs_by_outcome_and_examples_per_second(redis_url):
    redis = Redis.from_url(redis_url)
    queue = train_queue(redis)
    queue.enqueue(f"{__name__}.finishes", {"rate": 42.5})
    queue.enqueue(f"{__name__}.fails", {})
    queue.enqueue(f"{__name__}.reuses", {})
    worker = make_worker(TrainerSettings(redis_url=redis_url), redis)
    with serve_metrics(worker.metrics, "127.0.0.1", 0) as port:
        worker.work(burst=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scrape = samples(response.read().decode())
    assert scrape[("gold_trainer_jobs_total", (("status", "finished"),))] == 2
    assert scrape[("gold_trainer_jobs_total", (("status", "failed"),))] == 1
    assert scrape[("gold_trainer_examples_per_second", ())] == 42.5
    assert scrape[("gold_trainer_job_seconds_count", (("status", "failed"),))] == 1


def test_metrics_are_not_served_without_a_port(redis_url):
    worker = make_worker(TrainerSettings(redis_url=redis_url), Redis.from_url(redis_url))
    with serve_metrics(worker.metrics, "127.0.0.1", None) as port:
        assert port is None
