from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.main import create_app
from tests.support import sentiment_task

TOKEN = "test-token"


@pytest.fixture
def orchestrator_settings(database_url, redis_url, shared_data, tmp_path) -> OrchestratorSettings:
    return OrchestratorSettings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path,
        api_keys={"tests": TOKEN},
        # The operator's key, as "local" is for `gold up`: it also sees runs created in-process
        # (no owner). Tenants have their own tests (test_tenants.py).
        admin_keys=["tests"],
        data_roots=[shared_data, tmp_path],
    )


@pytest.fixture
def api(orchestrator_settings, session_factory) -> Iterator[TestClient]:
    app = create_app(orchestrator_settings, drive_runs=False)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
def spec(shared_data) -> dict:
    return {
        "name": "t",
        "task": sentiment_task(),
        "loop": {"iterations": 2, "samples_per_iteration": 8, "ood_samples_per_iteration": 4},
        "evaluation": {
            "path": str(shared_data / "sst2" / "validation.jsonl"),
            "input_map": {"text": "sentence"},
            "limit": 20,
        },
    }
