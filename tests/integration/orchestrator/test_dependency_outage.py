"""A run outlives an outage of a service it needs: the real run driver calls a real generator app
(over HTTP, with a scripted engine) that is down when the run starts and comes back a while later.
Meanwhile the run stays running and GET /runs/{id} says what it waits for; then it goes on and
succeeds. The scorer and trainer are the stand-ins of test_driver.py: their outages are the same
code path (RunContext.call), and a trainer with no worker has its own test (test_train_jobs.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings
from services.generator.main import create_app as create_generator
from shared.clients import GeneratorClient
from tests.integration.orchestrator import test_driver
from tests.integration.orchestrator.conftest import TOKEN
from tests.support import free_port, sentiment_task, served
from tests.unit.generator.fakes import FakeEngine

SPEC = {
    "name": "outage",
    "task": sentiment_task(),
    "loop": {"iterations": 1, "samples_per_iteration": 8, "feedback": False, "final_student": False},
    "verification": {"policy": "off"},
}
# The driver tests' fixtures: a driver with the stand-in scorer, and the stand-in trainer.
make_driver, stand_in_trainer = test_driver.make_driver, test_driver.stand_in_trainer


def poll(api: TestClient, run_id: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not until(run := api.get(f"/runs/{run_id}").json()):
        assert time.monotonic() < deadline, f"the run did not get there: {run}"
        time.sleep(0.1)
    return run


def test_a_run_waits_for_a_generator_that_is_down_and_goes_on_when_it_is_back(
    api,
    make_driver,
    stand_in_trainer,
):
    port = free_port()  # the generator's; nothing listens there yet
    generator = GeneratorClient(f"http://127.0.0.1:{port}", token=TOKEN)
    driver = make_driver(generator, dependency_patience_s=60.0)
    run_id = api.post("/runs", json=SPEC).json()["id"]
    driving = threading.Thread(target=driver.drive, args=(uuid.UUID(run_id),))
    driving.start()
    try:
        waiting = poll(api, run_id, lambda run: run["waiting_for"] is not None)
        assert waiting["status"] == "running" and waiting["stage"] == "generate_train"
        assert waiting["waiting_for"].startswith("generator: ConnectError calling http://127.0.0.1:")
        since = datetime.fromisoformat(waiting["waiting_since"])
        assert 0 <= (datetime.now(UTC) - since).total_seconds() < 10
        time.sleep(3)  # down a while longer: still waiting, the same outage
        still = api.get(f"/runs/{run_id}").json()
        assert still["status"] == "running" and still["waiting_since"] == waiting["waiting_since"]
        back = create_generator(GeneratorSettings(api_keys={"tests": TOKEN}), engine=FakeEngine())
        with served(back, port):
            driving.join(45)
            assert not driving.is_alive(), "the run did not go on once the generator was back"
    finally:
        driver.stop()
        driving.join(10)
    run = api.get(f"/runs/{run_id}").json()
    assert run["status"] == "succeeded", run["error"]
    assert run["waiting_for"] is None and run["waiting_since"] is None
    assert len(stand_in_trainer) == 1  # trained on what the generator gave once it was back
    retries = driver.metrics.registry.get_sample_value(
        "gold_orchestrator_retries_total", {"what": "generator"}
    )
    assert retries is not None and retries >= 2
