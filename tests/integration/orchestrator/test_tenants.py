"""Tenants against the real orchestrator and PostgreSQL: three keys, two tenants and an admin. A run
belongs to the key that created it; another tenant gets the 404 of a missing run on every route."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr
from sqlalchemy import func, select

from services.orchestrator.main import create_app
from shared.db.models import Checkpoint, Run, Sample
from shared.names import RunStatus

KEYS = {"alice": "alice-token", "bob": "bob-token", "ops": "ops-token"}

# Every route that reads or writes one run; cancel and delete come last (they change the run).
READS = [
    ("GET", ""),
    ("GET", "/summary"),
    ("GET", "/iterations"),
    ("GET", "/samples"),
    ("GET", "/metrics"),
    ("GET", "/report"),
    ("GET", "/dataset"),
    ("GET", "/dataset?format=parquet"),
    ("GET", "/dataset/card"),
    ("GET", "/model"),
]
WRITES = [("POST", "/cancel"), ("DELETE", "")]


class Tenants:
    """One app, one client; each call names the key it is sent with."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def call(self, who: str, method: str, url: str, **kw) -> Response:
        headers = {"Authorization": f"Bearer {KEYS[who]}", **kw.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kw)

    def create(self, who: str, spec: dict, **kw) -> str:
        response = self.call(who, "POST", "/runs", json=spec, **kw)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def listed(self, who: str) -> set[str]:
        response = self.call(who, "GET", "/runs")
        assert response.status_code == 200, response.text
        return {r["id"] for r in response.json()}


@pytest.fixture
def tenants(orchestrator_settings, session_factory) -> Iterator[Tenants]:
    keys = {name: SecretStr(token) for name, token in KEYS.items()}
    settings = orchestrator_settings.model_copy(update={"api_keys": keys, "admin_keys": ["ops"]})
    with TestClient(create_app(settings, drive_runs=False)) as client:
        yield Tenants(client)


def _with_student(session_factory, run_id: str, artifacts: Path) -> None:
    """A trained student on disk, so the owner's model export is a 200 rather than a 409."""
    folder = artifacts / "runs" / run_id / "final"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with session_factory.begin() as session:
        session.add(
            Checkpoint(
                run_id=uuid.UUID(run_id),
                iteration=3,
                role="final",
                path=str(folder.relative_to(artifacts)),
                student_model="m",
                student_kind="classifier",
            )
        )


def _not_found(response: Response, run_id: str) -> bool:
    """The answer a missing run gets: nothing tells the caller that the run exists."""
    return response.status_code == 404 and response.json() == {
        "error": "not_found",
        "message": f"run {run_id} not found",
    }


def test_a_missing_run_and_another_tenants_run_get_the_same_answer(tenants, spec):
    alice = tenants.create("alice", spec)
    missing = str(uuid.uuid4())
    for method, path in READS + WRITES:
        assert _not_found(tenants.call("alice", method, f"/runs/{missing}{path}"), missing), (method, path)
        assert _not_found(tenants.call("bob", method, f"/runs/{alice}{path}"), alice), (method, path)


def test_no_cross_tenant_reads(tenants, spec, session_factory, orchestrator_settings):
    runs = {who: tenants.create(who, spec | {"name": who}) for who in ("alice", "bob")}
    for run_id in runs.values():
        _with_student(session_factory, run_id, orchestrator_settings.artifacts)
    for owner, run_id in runs.items():
        for who in ("alice", "bob", "ops"):
            for method, path in READS:
                response = tenants.call(who, method, f"/runs/{run_id}{path}")
                if who in (owner, "ops"):
                    assert response.status_code == 200, (who, owner, path, response.text)
                else:
                    assert _not_found(response, run_id), (who, owner, path, response.text)
    assert tenants.call("alice", "GET", f"/runs/{runs['alice']}").json()["owner"] == "alice"
    dataset = tenants.call("bob", "GET", f"/runs/{runs['bob']}/dataset").text
    assert dataset and runs["alice"] not in dataset


def test_list_shows_a_tenant_its_own_runs_and_an_admin_all(tenants, spec, session_factory):
    alice = {tenants.create("alice", spec) for _ in range(2)}
    bob = {tenants.create("bob", spec)}
    ops = {tenants.create("ops", spec)}
    legacy = str(uuid.uuid4())  # created before runs had owners
    with session_factory.begin() as session:
        session.add(Run(id=uuid.UUID(legacy), name="old", spec={"name": "old"}))
    assert tenants.listed("alice") == alice
    assert tenants.listed("bob") == bob
    assert tenants.listed("ops") == alice | bob | ops | {legacy}
    queued = tenants.call("bob", "GET", "/runs", params={"status": "queued"}).json()
    assert {r["id"] for r in queued} == bob
    # An owner-less run is the admin's alone.
    assert _not_found(tenants.call("alice", "GET", f"/runs/{legacy}"), legacy)
    assert tenants.call("ops", "GET", f"/runs/{legacy}").json()["owner"] is None


def test_report_compares_only_runs_the_caller_may_see(tenants, spec):
    alice, bob = tenants.create("alice", spec), tenants.create("bob", spec)
    compare_bob = tenants.call("alice", "GET", f"/runs/{alice}/report", params={"compare": [bob]})
    assert _not_found(compare_bob, bob)
    assert (
        tenants.call("alice", "GET", f"/runs/{alice}/report", params={"compare": [alice]}).status_code == 200
    )
    both = tenants.call("ops", "GET", f"/runs/{alice}/report", params={"compare": [bob]})
    assert both.status_code == 200 and "<html" in both.text.lower()


def test_no_cross_tenant_writes(tenants, spec, session_factory):
    alice = tenants.create("alice", spec)
    assert _not_found(tenants.call("bob", "POST", f"/runs/{alice}/cancel"), alice)
    tenants.call("alice", "POST", f"/runs/{alice}/cancel")  # finished: deletable by its owner...
    assert _not_found(tenants.call("bob", "DELETE", f"/runs/{alice}"), alice)  # ...not by another
    with session_factory() as session:
        run = session.get(Run, uuid.UUID(alice))
        assert run is not None and run.status == RunStatus.CANCELLED and run.owner == "alice"
        assert session.scalar(select(func.count()).select_from(Sample).where(Sample.run_id == run.id)) > 0
    assert tenants.call("alice", "DELETE", f"/runs/{alice}").status_code == 204
    assert _not_found(tenants.call("alice", "GET", f"/runs/{alice}"), alice)


def test_an_admin_manages_every_tenants_runs(tenants, spec, session_factory):
    alice, bob = tenants.create("alice", spec), tenants.create("bob", spec)
    assert tenants.call("ops", "POST", f"/runs/{alice}/cancel").json()["status"] == "cancelled"
    assert tenants.call("ops", "DELETE", f"/runs/{alice}").status_code == 204
    with session_factory() as session:
        assert set(session.scalars(select(Run.id))) == {uuid.UUID(bob)}


def test_idempotency_keys_are_per_tenant(tenants, spec, session_factory):
    first = {who: tenants.create(who, spec, headers={"Idempotency-Key": "k"}) for who in ("alice", "bob")}
    assert first["alice"] != first["bob"]
    for who in ("alice", "bob"):  # a retry finds the caller's own run, never the other tenant's
        assert tenants.create(who, spec, headers={"Idempotency-Key": "k"}) == first[who]
    # Another tenant's key with a different spec is a new run, not a 409 revealing the first.
    ops = tenants.create("ops", spec | {"name": "other"}, headers={"Idempotency-Key": "k"})
    conflict = tenants.call(
        "alice", "POST", "/runs", json=spec | {"name": "other"}, headers={"Idempotency-Key": "k"}
    )
    assert conflict.status_code == 409
    with session_factory() as session:
        owners = {run_id: owner for run_id, owner in session.execute(select(Run.id, Run.owner))}
    assert owners == {
        uuid.UUID(first["alice"]): "alice",
        uuid.UUID(first["bob"]): "bob",
        uuid.UUID(ops): "ops",
    }


def test_without_api_keys_every_run_is_visible(orchestrator_settings, session_factory, spec):
    settings = orchestrator_settings.model_copy(update={"api_keys": {}})
    with TestClient(create_app(settings, drive_runs=False)) as client:
        run = client.post("/runs", json=spec).json()
        assert run["owner"] is None
        assert [r["id"] for r in client.get("/runs").json()] == [run["id"]]
        assert client.post(f"/runs/{run['id']}/cancel").json()["status"] == "cancelled"
