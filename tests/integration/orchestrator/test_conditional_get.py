"""Conditional GETs of a run's status and summary against the real orchestrator and PostgreSQL: the
ETag, 304 to a matching If-None-Match, a new ETag once the run changes, tenancy unchanged, and the
client (what `gold` follows runs with) reusing its last body on 304."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gold.client import Client
from services.orchestrator.main import create_app
from shared.db.models import Run, Sample
from shared.names import RunStatus
from tests.integration.orchestrator.conftest import TOKEN
from tests.support import served

ROUTES = ["", "/summary"]


@pytest.fixture
def run_id(api, spec) -> str:
    response = api.post("/runs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _set_status(session_factory, run_id: str, status: str) -> None:
    with session_factory.begin() as session:
        session.get(Run, uuid.UUID(run_id)).status = status


@pytest.mark.parametrize("route", ROUTES)
def test_matching_etag_is_304_with_no_body(api, run_id, route):
    first = api.get(f"/runs/{run_id}{route}")
    assert first.status_code == 200, first.text
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2  # strong: no W/
    assert first.headers["Cache-Control"] == "private, no-cache"
    assert api.get(f"/runs/{run_id}{route}").headers["ETag"] == etag  # same body, same tag

    for sent in (etag, f"W/{etag}", f'"stale", {etag}', "*"):
        again = api.get(f"/runs/{run_id}{route}", headers={"If-None-Match": sent})
        assert again.status_code == 304, sent
        assert again.content == b"" and again.headers["ETag"] == etag

    for sent in ('"stale"', etag.strip('"'), '"stale", W/"other"'):  # unquoted is no entity tag
        fresh = api.get(f"/runs/{run_id}{route}", headers={"If-None-Match": sent})
        assert fresh.status_code == 200 and fresh.json() == first.json(), sent


@pytest.mark.parametrize("route", ROUTES)
def test_a_change_to_the_run_is_200_with_a_new_etag(api, run_id, route, session_factory):
    etag = api.get(f"/runs/{run_id}{route}").headers["ETag"]
    _set_status(session_factory, run_id, RunStatus.RUNNING)
    changed = api.get(f"/runs/{run_id}{route}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    status = changed.json()["status"] if route == "" else changed.json()["run"]["status"]
    assert status == RunStatus.RUNNING
    new = changed.headers["ETag"]
    assert api.get(f"/runs/{run_id}{route}", headers={"If-None-Match": new}).status_code == 304


def test_summary_etag_follows_rows_beside_the_run(api, run_id, session_factory):
    """A sample written by the loop leaves the run row as it was but changes the summary's counts:
    the summary's ETag changes with it, the status's does not."""
    status_etag = api.get(f"/runs/{run_id}").headers["ETag"]
    summary_etag = api.get(f"/runs/{run_id}/summary").headers["ETag"]
    with session_factory.begin() as session:
        session.add(
            Sample(
                run_id=uuid.UUID(run_id),
                iteration=1,
                kind="train",
                position=0,
                fields={"text": "Quietly moving.", "label": "positive"},
                label="positive",
            )
        )
    summary = api.get(f"/runs/{run_id}/summary", headers={"If-None-Match": summary_etag})
    assert summary.status_code == 200 and summary.json()["sample_counts"]["train"] == 1
    assert api.get(f"/runs/{run_id}", headers={"If-None-Match": status_etag}).status_code == 304


@pytest.mark.parametrize("route", ROUTES)
def test_another_tenant_gets_404_whatever_it_sends(orchestrator_settings, session_factory, spec, route):
    keys = {"alice": SecretStr("alice-token"), "bob": SecretStr("bob-token")}
    settings = orchestrator_settings.model_copy(update={"api_keys": keys, "admin_keys": []})
    with TestClient(create_app(settings, drive_runs=False)) as client:
        alice, bob = {"Authorization": "Bearer alice-token"}, {"Authorization": "Bearer bob-token"}
        run_id = client.post("/runs", json=spec, headers=alice).json()["id"]
        etag = client.get(f"/runs/{run_id}{route}", headers=alice).headers["ETag"]
        for guess in (etag, "*", '"0"'):
            response = client.get(f"/runs/{run_id}{route}", headers={**bob, "If-None-Match": guess})
            assert response.status_code == 404, guess
            assert "ETag" not in response.headers


def test_client_reuses_its_last_body_on_304(orchestrator_settings, session_factory, spec):
    with served(create_app(orchestrator_settings, drive_runs=False)) as url:
        client = Client(url, TOKEN)
        answered: list[tuple[str, int]] = []

        def record(response: httpx.Response) -> None:
            answered.append((response.request.headers.get("If-None-Match", ""), response.status_code))

        client._http.event_hooks["response"].append(record)
        try:
            run_id = str(client.create_run(spec).id)
            answered.clear()
            first, second = client.get_run(run_id), client.get_run(run_id)
            assert second == first and second is not first
            summary = client.summary(run_id)
            assert client.summary(run_id) == summary
            assert [status for _, status in answered] == [200, 304, 200, 304]
            assert answered[0][0] == "" and answered[1][0].startswith('"')

            _set_status(session_factory, run_id, RunStatus.RUNNING)
            assert client.get_run(run_id).status == RunStatus.RUNNING
            assert answered[-1][1] == 200
            assert client.get_run(run_id).status == RunStatus.RUNNING
            assert answered[-1][1] == 304
        finally:
            client.close()
