"""MLflow tracking (services/orchestrator/tracking) against a real MLflow tracking server started
here (SQLite store, artifacts proxied into a tmp folder) and read back with MlflowClient. The runs
are driven by the real driver on real Postgres, with the stand-in services of test_driver.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from services.orchestrator.service import create_run
from services.orchestrator.tracking.content import EVAL_KEY
from shared.artifacts import ArtifactStore
from shared.checkpoints import METADATA_FILE, metadata_path
from shared.db.models import Run, RunTracking, Sample
from shared.spec import RunSpec
from tests.integration.orchestrator.test_driver import (  # noqa: F401 - fixtures used by name
    StandInGenerator,
    _submit,
    make_driver,
    stand_in_trainer,
)

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (pip install 'gold[mlflow]')")
from mlflow.tracking import MlflowClient  # noqa: E402

from services.orchestrator.tracking.worker import Tracker  # noqa: E402

pytestmark = pytest.mark.usefixtures("stand_in_trainer")  # students: checkpoint rows and metrics


class MlflowServer:
    """`mlflow server` on a free port, stoppable and restartable on the same store and port."""

    def __init__(self, folder: Path):
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"),
            *("--artifacts-destination", str(self.folder / "artifacts")),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]
        # No job runner: its consumer processes are not needed to log runs.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.uri}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(
            f"mlflow server did not answer: {(self.folder / 'server.log').read_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and its workers
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:  # uvicorn waits for idle keep-alive clients: no need
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tracked(make_driver, mlflow_server):  # noqa: F811 - the fixture imported above
    """(driver, tracker, client, experiment) sending to the server, each test its own experiment."""
    experiment = f"tests-{uuid.uuid4().hex[:8]}"
    overrides = {"mlflow_tracking_uri": mlflow_server.uri, "mlflow_experiment": experiment}
    driver = make_driver(StandInGenerator(), mlflow_retry_max_s=0.5, **overrides)
    tracker = Tracker(
        driver.settings, driver.sessions, ArtifactStore.from_settings(driver.settings), poll_s=0.2
    )
    return driver, tracker, MlflowClient(tracking_uri=mlflow_server.uri), experiment


def _mlflow_run(client, experiment: str, run_id: uuid.UUID):
    found = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id],
        filter_string=f"tags.`gold.run_id` = '{run_id}'",
    )
    assert len(found) == 1, found  # one MLflow run per GOLD run, whatever was re-sent
    return found[0]


def _steps(client, mlflow_run_id: str, name: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(mlflow_run_id, name))


def _student_folder(settings, run_id: uuid.UUID) -> None:
    """The final student's files where the stand-in trainer's checkpoint row says they are."""
    checkpoint = uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/3/final")  # as stand_in_trainer names it
    folder = ArtifactStore.from_settings(settings).local_folder(checkpoint)
    folder.mkdir(parents=True)
    metadata_path(folder).write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)


def test_a_run_is_an_mlflow_run_with_its_spec_metrics_and_artifacts_and_a_resume_logs_nothing_twice(
    tracked, spec, session_factory
):
    driver, tracker, client, experiment = tracked
    choose = driver.scorer.select

    def send_then_select(request):  # mid-iteration: trained and scored, its feedback not yet chosen
        tracker.send_due()
        return choose(request)

    driver.scorer.select = send_then_select
    driver.generator.fail_on_call = 3  # iteration 2's generation: the run fails, then resumes
    driver.generator.failure = RuntimeError("process died")
    run_id = _submit(spec, session_factory, driver.settings)
    driver.drive(run_id)
    assert tracker.send_due() == 1
    failed = _mlflow_run(client, experiment, run_id)
    assert failed.info.status == "FAILED" and "process died" in failed.data.tags["gold.error"]
    assert _steps(client, failed.info.run_id, "eval_accuracy") == [1]

    with session_factory.begin() as session:  # resumed, as test_driver's crash test does
        session.execute(Run.__table__.update().where(Run.id == run_id).values(status="running", error=None))
    driver.generator.fail_on_call = None
    driver.drive(run_id)
    _student_folder(driver.settings, run_id)
    assert tracker.send_due() == 1
    assert tracker.send_due() == 0  # nothing new: nothing sent

    logged = _mlflow_run(client, experiment, run_id)
    mlflow_run_id = logged.info.run_id
    assert logged.info.status == "FINISHED" and logged.info.run_name == spec["name"]
    params, tags, metrics = logged.data.params, logged.data.tags, logged.data.metrics
    assert params["loop.iterations"] == "2" and params["task.type"] == "classification"
    assert params["evaluation.input_map.text"] == "sentence"
    assert json.loads(params["task.labels"]) == spec["task"]["labels"]
    assert tags["gold.mode"] == "gold" and tags["gold.task_type"] == "classification"
    assert tags["gold.teacher"] == "default" and tags["gold.status"] == "succeeded"
    assert "gold.error" not in tags  # the failure it resumed from is gone
    # Every point once, at step = iteration, though iteration 1 was sent before the resume too.
    assert _steps(client, mlflow_run_id, "eval_accuracy") == [1, 2, 3]  # 3: the final student
    for name in ("samples_train", "fed_back", "time_train", "teacher_agreement", "distinct_2"):
        assert _steps(client, mlflow_run_id, name) == [1, 2], name
    assert _steps(client, mlflow_run_id, "energy_band_low") == [1, 2]
    assert _steps(client, mlflow_run_id, "teacher_eval_accuracy") == [0]
    assert metrics["samples_train"] == 8
    with session_factory() as session:
        selected = session.execute(
            select(Sample.iteration, func.count())
            .where(Sample.run_id == run_id, Sample.selected)
            .group_by(Sample.iteration)
        ).all()
    fed_back = {m.step: m.value for m in client.get_metric_history(mlflow_run_id, "fed_back")}
    assert fed_back == {1: 0, 2: 0} | {i: n for i, n in selected}
    assert metrics["final_eval_accuracy"] == 0.5 and metrics["run_seconds"] > 0
    assert metrics["time_total_train"] >= metrics["time_train"]
    for name in metrics:  # sent before, between and after the steps: each point once all the same
        steps = _steps(client, mlflow_run_id, name)
        assert len(steps) == len(set(steps)), (name, steps)

    names = {a.path for a in client.list_artifacts(mlflow_run_id)}
    assert names == {"spec.yaml", "report.html", "dataset", "student"}
    student = {a.path for a in client.list_artifacts(mlflow_run_id, "student")}
    assert student == {f"student/{METADATA_FILE}", "student/model.safetensors"}
    dataset = Path(client.download_artifacts(mlflow_run_id, "dataset/samples.jsonl"))
    with session_factory() as session:
        samples = len(session.scalars(select(Sample.id).where(Sample.run_id == run_id)).all())
        run = session.get(Run, run_id)
        assert run.mlflow_run_id == mlflow_run_id and run.tracking_lag is None
    assert len(dataset.read_text().splitlines()) == samples
    report = Path(client.download_artifacts(mlflow_run_id, "report.html")).read_text()
    assert report.startswith("<!doctype html>") and spec["name"] in report


def test_a_tracking_server_that_is_down_lags_the_tracking_not_the_run(
    tracked, spec, session_factory, mlflow_server, api
):
    driver, tracker, client, experiment = tracked
    mlflow_server.stop()
    tracker.start()
    try:
        run_id = _submit(spec, session_factory, driver.settings)
        driver.drive(run_id)
        deadline = time.monotonic() + 10
        while not (lag := api.get(f"/runs/{run_id}").json()["tracking_lag"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        run = api.get(f"/runs/{run_id}").json()
        assert run["status"] == "succeeded"
        assert lag and lag.startswith("MLflow tracking lags since") and mlflow_server.uri in lag

        mlflow_server.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with session_factory() as session:
                state = session.get(RunTracking, run_id)
                lag = session.get(Run, run_id).tracking_lag
                if state.synced == state.due and lag is None:
                    break
            time.sleep(0.3)
        assert state.synced == state.due and lag is None, lag  # the outbox drained
    finally:
        tracker.stop()
    logged = _mlflow_run(client, experiment, run_id)
    assert logged.info.status == "FINISHED"
    assert _steps(client, logged.info.run_id, "eval_accuracy") == [1, 2, 3]
    assert api.get(f"/runs/{run_id}").json()["mlflow_run_id"] == logged.info.run_id


def test_the_runs_of_one_gold_eval_share_an_experiment_tagged_by_mode_and_repeat(
    tracked, spec, session_factory
):
    driver, tracker, client, _ = tracked
    evaluated = f"sst2-{uuid.uuid4().hex[:6]}"
    spec["loop"]["iterations"] = 1
    runs = {}
    for mode, repeat in (("gold", 0), ("vanilla", 0), ("gold", 1)):
        mode_spec = {**spec, "name": f"{evaluated}-{mode}-r{repeat}"}
        mode_spec["loop"] = {**spec["loop"], "feedback": mode == "gold"}
        key = f"gold-eval-{uuid.uuid4().hex}"
        assert EVAL_KEY.match(key)
        with session_factory.begin() as session:
            run = create_run(
                RunSpec.model_validate(mode_spec),
                session=session,
                settings=driver.settings,
                idempotency_key=key,
            )
            runs[(mode, repeat)] = (run.id, key)
    tracker.start()  # sending as the steps commit, while the runs are driven
    try:
        for run_id, _ in runs.values():
            driver.drive(run_id)
        deadline = time.monotonic() + 30
        while _unsent(session_factory, [r for r, _ in runs.values()]):
            assert time.monotonic() < deadline, "the outbox did not drain"
            time.sleep(0.3)
    finally:
        tracker.stop()
    experiment = client.get_experiment_by_name(f"gold eval: {evaluated}")
    found = client.search_runs([experiment.experiment_id])
    assert len(found) == 3
    by_id = {r.data.tags["gold.run_id"]: r.data.tags for r in found}
    for (mode, repeat), (run_id, key) in runs.items():
        tags = by_id[str(run_id)]
        assert tags["gold.eval.mode"] == tags["gold.mode"] == mode
        assert tags["gold.eval.repeat"] == str(repeat) and tags["gold.eval.spec"] == evaluated
        assert tags["gold.eval.spec_hash"] == key.removeprefix("gold-eval-")
    for logged in found:  # sent step by step as the runs went, each point once all the same
        for name in logged.data.metrics:
            steps = _steps(client, logged.info.run_id, name)
            assert len(steps) == len(set(steps)), (name, steps)
    assert _steps(client, found[0].info.run_id, "eval_accuracy") == [1, 2]  # 2: the final student


def _unsent(session_factory, run_ids) -> bool:
    with session_factory() as session:
        rows = session.scalars(select(RunTracking).where(RunTracking.run_id.in_(run_ids))).all()
    return len(rows) < len(run_ids) or any(r.due > r.synced for r in rows)
