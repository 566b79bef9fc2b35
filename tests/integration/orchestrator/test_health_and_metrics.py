"""The orchestrator's /readyz (Postgres and Redis answer) and the metrics it reads at scrape time
(runs by status, train queue depth), against the real servers and a dead Redis port."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from services.orchestrator.main import create_app
from shared.jobs import enqueue_train, train_queue
from shared.schemas.training import TrainJob
from tests.support import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus scrape by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_readyz_answers_200_when_postgres_and_redis_answer(api):
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


def test_readyz_answers_503_naming_redis_when_redis_is_unreachable(orchestrator_settings, session_factory):
    settings = orchestrator_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(settings, drive_runs=False)) as client:
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200  # liveness does not depend on the stores
        scrape = client.get("/metrics")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["down"] == ["redis"]
    assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"].startswith("unreachable")
    # A scrape still answers: the queue depth is left out, runs by status are there.
    assert scrape.status_code == 200
    assert "gold_orchestrator_train_queue_depth" not in scrape.text
    assert ("gold_orchestrator_runs", (("status", "queued"),)) in samples(scrape.text)


def test_readyz_answers_503_naming_postgres_when_postgres_is_unreachable(orchestrator_settings):
    url = f"postgresql+psycopg://gold@127.0.0.1:{free_port()}/gold"
    settings = orchestrator_settings.model_copy(update={"database_url": url})
    with TestClient(create_app(settings, drive_runs=False)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["postgres"]


def test_metrics_read_runs_by_status_and_queue_depth_at_scrape_time(api, spec, redis_url):
    before = samples(api.get("/metrics").text)
    assert before[("gold_orchestrator_runs", (("status", "queued"),))] == 0
    assert before[("gold_orchestrator_train_queue_depth", ())] == 0
    assert api.post("/runs", json=spec).status_code == 201
    enqueue_train(train_queue(Redis.from_url(redis_url)), TrainJob(run_id="r", iteration=1, role="loop"))
    after = samples(api.get("/metrics").text)
    assert after[("gold_orchestrator_runs", (("status", "queued"),))] == 1
    assert after[("gold_orchestrator_runs", (("status", "succeeded"),))] == 0
    assert after[("gold_orchestrator_train_queue_depth", ())] == 1
    # The HTTP metrics every service has, by route template.
    key = ("gold_orchestrator_requests_total", (("method", "POST"), ("path", "/runs"), ("status", "201")))
    assert after[key] == 1


@pytest.mark.parametrize("path", ["/readyz", "/metrics", "/healthz"])
def test_health_and_metrics_need_no_key(orchestrator_settings, session_factory, path):
    with TestClient(create_app(orchestrator_settings, drive_runs=False)) as client:
        assert client.get(path).status_code == 200
