"""The scorer's request metrics (shared/metrics.py, as the generator's) on /metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.scorer.config import ScorerSettings
from services.scorer.main import create_app
from tests.integration.orchestrator.test_health_and_metrics import samples


def test_scorer_counts_requests_by_route_and_status(tmp_path):
    settings = ScorerSettings(artifact_dir=tmp_path, api_keys={"tests": "secret"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/energy", json={}).status_code == 401
        scrape = samples(client.get("/metrics").text)
    ready = ("gold_scorer_requests_total", (("method", "GET"), ("path", "/readyz"), ("status", "200")))
    assert scrape[ready] == 1
    assert scrape[("gold_scorer_errors_total", (("path", "/v1/energy"), ("status", "401")))] == 1
    assert scrape[("gold_scorer_request_seconds_count", (("path", "/readyz"),))] == 1
