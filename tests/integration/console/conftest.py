"""The orchestrator (real Postgres and Redis, no driver) served over HTTP by uvicorn, and Debian's
chromium driven by Playwright: the console as a person uses it. `make test` installs chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.main import create_app
from tests.support import served

CHROMIUM = Path("/usr/bin/chromium")
ALICE, ALICE_KEY = "alice", "alice-key-5b1f0e7c9d"
BOB, BOB_KEY = "bob", "bob-key-93aa41c2e6"


@pytest.fixture(scope="module")
def console_settings(database_url, redis_server, fixture_data, tmp_path_factory) -> OrchestratorSettings:
    data = tmp_path_factory.mktemp("console-data")
    return OrchestratorSettings(
        database_url=database_url,
        redis_url=redis_server.url,
        data_dir=data,
        api_keys={ALICE: ALICE_KEY, BOB: BOB_KEY},
        admin_keys=[],
        data_roots=[fixture_data, data],
    )


@pytest.fixture(scope="module")
def console_url(console_settings) -> Iterator[str]:
    with served(create_app(console_settings, drive_runs=False)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the console's browser tests need Debian's chromium at {CHROMIUM}: `make test` installs it "
            "(apt-get install -y chromium, as root)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where a test saves its pages' screenshots (under its tmp folder, to look at)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder
