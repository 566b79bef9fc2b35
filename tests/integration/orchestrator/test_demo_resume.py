"""`gold demo` after an interruption follows the demo run the stack resumes instead of queueing a
second one: the decision against the real orchestrator (over HTTP) and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from gold.client import Client
from gold.demo import start_demo
from services.orchestrator.main import create_app
from shared.db.models import Run
from shared.names import RunStatus
from tests.support import served

LOCAL, TEAM = "local-token", "team-token"


@pytest.fixture
def clients(orchestrator_settings, session_factory):
    """The launcher's own key ("local", an admin as `gold up` makes it) and another team's."""
    keys = {"local": SecretStr(LOCAL), "team": SecretStr(TEAM)}
    settings = orchestrator_settings.model_copy(update={"api_keys": keys, "admin_keys": ["local"]})
    with served(create_app(settings, drive_runs=False)) as url:
        local, team = Client(url, LOCAL), Client(url, TEAM)
        try:
            yield local, team
        finally:
            local.close()
            team.close()


def _set_status(session_factory, run_id: uuid.UUID, status: str) -> None:
    with session_factory.begin() as session:
        session.get(Run, run_id).status = status


def _runs(session_factory) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Run)) or 0


def test_an_interrupted_demo_is_followed_and_a_finished_one_is_not(clients, spec, session_factory):
    local, _ = clients
    first, line = start_demo(local, spec)
    assert line == f"run {first.id}: {spec['name']}"

    # Stopped before the driver took it (queued) or part-way (running): followed, nothing submitted.
    for status in (RunStatus.QUEUED, RunStatus.RUNNING):
        _set_status(session_factory, first.id, status)
        again, line = start_demo(local, spec)
        assert again.id == first.id
        assert line.startswith(f"resuming the interrupted demo run {first.id} (started ")
        assert _runs(session_factory) == 1

    # Ended (or being cancelled): the next demo is a new run, and then that one is followed.
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLING, RunStatus.CANCELLED):
        _set_status(session_factory, first.id, status)
        fresh, line = start_demo(local, spec)
        assert fresh.id != first.id and line.startswith("run ")
        with session_factory.begin() as session:  # keep only the first run for the next status
            session.delete(session.get(Run, fresh.id))
    assert _runs(session_factory) == 1


def test_the_newest_unfinished_demo_of_the_local_key_is_followed(clients, spec, session_factory):
    local, team = clients
    other_name = start_demo(local, {**spec, "name": "not-the-demo"})[0]
    older = local.create_run(spec)
    newer = local.create_run(spec)
    teams = team.create_run(spec)  # another team's run of the same spec, newer still: not ours
    for run in (other_name, older, newer, teams):
        _set_status(session_factory, run.id, RunStatus.RUNNING)
    followed, _ = start_demo(local, spec)
    assert followed.id == newer.id
    assert _runs(session_factory) == 4
