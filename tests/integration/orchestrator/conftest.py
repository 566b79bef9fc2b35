from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings
from services.generator.main import create_app as create_generator
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.main import create_app
from shared.db.models import Checkpoint, Run
from shared.names import RunStatus
from tests.support import sentiment_task, served
from tests.unit.generator.fakes import FakeEngine

TOKEN = "test-token"


@pytest.fixture
def orchestrator_settings(database_url, redis_url, fixture_data, tmp_path) -> OrchestratorSettings:
    return OrchestratorSettings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path,
        api_keys={"tests": TOKEN},
        # The operator's key, as "local" is for `gold up`: it also sees runs created in-process
        # (no owner). Tenants have their own tests (test_tenants.py).
        admin_keys=["tests"],
        data_roots=[fixture_data, tmp_path],
    )


@pytest.fixture
def api(orchestrator_settings, session_factory) -> Iterator[TestClient]:
    app = create_app(orchestrator_settings, drive_runs=False)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
def spec(fixture_data) -> dict:
    return {
        "name": "t",
        "task": sentiment_task(),
        "loop": {"iterations": 2, "samples_per_iteration": 8, "ood_samples_per_iteration": 4},
        "evaluation": {
            "path": str(fixture_data / "sentiment" / "validation.jsonl"),
            "input_map": {"text": "sentence"},
            "limit": 20,
        },
    }


@pytest.fixture
def generator_url() -> Iterator[str]:
    """A real generator app (a scripted engine serving "fake/model" as "default") over HTTP."""
    settings = GeneratorSettings(api_keys={"tests": TOKEN})
    with served(create_generator(settings, engine=FakeEngine())) as url:
        yield url


def student_run(
    api, session_factory, task: dict, *, status=RunStatus.SUCCEEDED, checkpoint: str | None = None
) -> str:
    """A run as the driver leaves it: its status and, when given, its final student's checkpoint."""
    student = {"kind": "causal"} if task["type"] == "seq2seq" else {}
    response = api.post("/runs", json={"name": "predict", "task": task, "student": student})
    assert response.status_code == 201, response.text
    run_id = uuid.UUID(response.json()["id"])
    with session_factory.begin() as session:
        session.get(Run, run_id).status = status
        if checkpoint is not None:
            session.add(
                Checkpoint(
                    id=uuid.UUID(checkpoint),
                    run_id=run_id,
                    iteration=2,
                    role="final",
                    path=f"checkpoints/{checkpoint}",
                    student_model="default",
                    student_kind="classifier" if task["type"] == "classification" else "causal",
                )
            )
    return str(run_id)
