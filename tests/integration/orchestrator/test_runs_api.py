"""The public run API against a real PostgreSQL: contract, validation errors, idempotency."""

from __future__ import annotations

import copy
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from services.orchestrator.main import create_app
from shared.db.models import Run, Sample
from tests.integration.orchestrator.conftest import TOKEN
from tests.support import free_port


def test_create_then_read_run(api, spec, session_factory):
    response = api.post("/runs", json=spec)
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "queued"
    assert api.get(f"/runs/{run['id']}").json()["id"] == run["id"]
    assert [r["id"] for r in api.get("/runs").json()] == [run["id"]]
    seeds = api.get(f"/runs/{run['id']}/samples", params={"kind": "seed"}).json()
    given = spec["task"]["seed_examples"]
    assert seeds["total"] == len(given) and seeds["items"][0]["label"] == given[0]["label"]
    assert api.get(f"/runs/{run['id']}/iterations").json() == []
    assert api.get(f"/runs/{run['id']}/metrics").json() == []
    summary = api.get(f"/runs/{run['id']}/summary").json()
    assert summary["sample_counts"]["seed"] == len(given)


def _with(spec: dict, path: str, value) -> dict:
    spec = copy.deepcopy(spec)
    target = spec
    *parents, last = path.split(".")
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    key = int(last) if last.isdigit() else last
    if value is _DELETE:
        del target[key]
    else:
        target[key] = value
    return spec


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("task.type", "regression", "task.type"),
        ("task.labels", _DELETE, "task.labels"),
        ("task.seed_examples.0.label", "neutral", "task.seed_examples"),
        ("task.seed_examples.1", {"label": "negative"}, "task.seed_examples"),
        ("loop.iterations", -1, "loop.iterations"),
        ("loop.selection_band", [0.9, 0.2], "loop.selection_band"),
        ("loop.selection_band", [0.5, 1.5], "loop.selection_band"),
        ("evaluation.path", "sst2/does-not-exist.jsonl", "evaluation.path"),
        ("evaluation.path", "/etc/passwd", "evaluation.path"),
        ("evaluation.path", "../../../../etc/passwd", "evaluation.path"),
        ("evaluation.reference_path", "/etc/passwd", "evaluation.reference_path"),
        ("evaluation.dataset", "stanfordnlp/sst2", "evaluation.dataset"),  # beside path: one source
        ("evaluation.path", _DELETE, "evaluation.dataset"),  # nor none: path or dataset
        ("evaluation.dataset", "/etc", "evaluation.dataset"),  # a hub id, never a path
        ("evaluation.metric", "rouge_l", "evaluation"),  # a seq2seq metric on a classification task
        ("evaluation.metric", "bleu", "evaluation.metric"),
        ("loop.unknown_knob", 3, "loop.unknown_knob"),
        ("student", {"model": "gpt2-xl"}, "student.model"),  # not in the trainer's allow-list
    ],
)
def test_invalid_spec_is_422_naming_the_field(api, spec, session_factory, path, value, field):
    response = api.post("/runs", json=_with(spec, path, value))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert any(".".join(str(p) for p in d["loc"]).startswith(field) for d in body["detail"]), body
    with session_factory() as session:  # nothing half-created
        assert session.scalar(select(func.count()).select_from(Run)) == 0
        assert session.scalar(select(func.count()).select_from(Sample)) == 0


def test_unknown_run_is_404(api):
    missing = uuid.uuid4()
    for path in ("", "/iterations", "/samples", "/metrics", "/summary"):
        response = api.get(f"/runs/{missing}{path}")
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    assert api.post(f"/runs/{missing}/cancel").status_code == 404
    assert api.get("/runs/not-a-uuid").status_code == 422


def test_auth_required(api, spec):
    response = api.post("/runs", json=spec, headers={"Authorization": ""})
    assert response.status_code == 401
    assert api.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_idempotency_key_returns_the_same_run(api, spec, session_factory):
    first = api.post("/runs", json=spec, headers={"Idempotency-Key": "abc"})
    second = api.post("/runs", json=spec, headers={"Idempotency-Key": "abc"})
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 1


def test_idempotency_key_with_another_spec_is_409(api, spec, session_factory):
    first = api.post("/runs", json=spec, headers={"Idempotency-Key": "abc"})
    assert first.status_code == 201, first.text
    # The same name, another loop: a retry must not answer with the run of the first spec.
    changed = _with(spec, "loop.iterations", spec["loop"].get("iterations", 3) + 1)
    second = api.post("/runs", json=changed, headers={"Idempotency-Key": "abc"})
    assert second.status_code == 409, second.text
    assert second.json()["error"] == "conflict" and "Idempotency-Key" in second.json()["message"]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 1
    # The first spec again is the retry it looks like.
    assert api.post("/runs", json=spec, headers={"Idempotency-Key": "abc"}).json()["id"] == first.json()["id"]


def test_cancel_queued_run(api, spec):
    run = api.post("/runs", json=spec).json()
    cancelled = api.post(f"/runs/{run['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None


def test_evaluation_path_is_stored_resolved(api, spec, fixture_data):
    spec = _with(spec, "evaluation.path", "sentiment/validation.jsonl")
    run = api.post("/runs", json=spec).json()
    stored = run["spec"]["evaluation"]["path"]
    assert stored == str((fixture_data / "sentiment" / "validation.jsonl").resolve())


def test_delete_only_finished_runs(api, spec, session_factory):
    run = api.post("/runs", json=spec).json()
    assert api.delete(f"/runs/{run['id']}").status_code == 409
    api.post(f"/runs/{run['id']}/cancel")
    assert api.delete(f"/runs/{run['id']}").status_code == 204
    assert api.get(f"/runs/{run['id']}").status_code == 404
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Sample)) == 0


def test_dataset_is_jsonl_and_model_needs_a_student(api, spec):
    import json

    run = api.post("/runs", json=spec).json()
    response = api.get(f"/runs/{run['id']}/dataset")
    assert response.status_code == 200
    rows = [json.loads(line) for line in response.text.splitlines()]
    given = spec["task"]["seed_examples"]
    assert [r["gold_kind"] for r in rows] == ["seed"] * len(given)
    assert rows[0]["text"] == given[0]["text"] and rows[0]["label"] == given[0]["label"]
    model = api.get(f"/runs/{run['id']}/model")
    assert model.status_code == 409 and "no trained student" in model.json()["message"]


def test_teacher_model_must_be_served_by_the_generator(
    orchestrator_settings, session_factory, spec, generator_url
):
    settings = orchestrator_settings.model_copy(
        update={"generator_url": generator_url, "service_token": SecretStr(TOKEN)}
    )
    with TestClient(
        create_app(settings, drive_runs=False), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as api:
        unknown = api.post("/runs", json={**spec, "teacher": {"model": "meta-llama/Llama-3-70B"}})
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["detail"][0]["loc"] == ["teacher", "model"]
        assert "fake/model" in unknown.json()["message"]  # what it could have named
        with session_factory() as session:
            assert session.scalar(select(func.count()).select_from(Run)) == 0
        assert api.post("/runs", json={**spec, "teacher": {"model": "fake/model"}}).status_code == 201
        assert api.post("/runs", json=spec).status_code == 201  # "default": no question asked
    down = orchestrator_settings.model_copy(update={"generator_url": f"http://127.0.0.1:{free_port()}"})
    with TestClient(create_app(down, drive_runs=False), headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        # never a run on a teacher nobody checked: retry once the generator answers
        assert api.post("/runs", json={**spec, "teacher": {"model": "fake/model"}}).status_code == 503


def test_an_api_only_orchestrator_leaves_runs_to_the_drivers(orchestrator_settings, session_factory, spec):
    """GOLD_CONCURRENT_RUNS=0: the replica serves the API and never claims a run (its driver is not
    started), so API replicas can be added without adding run drivers."""
    api_only = orchestrator_settings.model_copy(update={"concurrent_runs": 0, "driver_poll_s": 0.05})
    with TestClient(create_app(api_only), headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        run = api.post("/runs", json=spec).json()
        time.sleep(0.5)  # ten of a driver's polls
        assert api.get(f"/runs/{run['id']}").json()["status"] == "queued"
    with session_factory() as session:
        assert session.get(Run, uuid.UUID(run["id"])).lease_owner is None
