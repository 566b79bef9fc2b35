"""Property-based requests generated from the orchestrator's own OpenAPI schema: no 5xx, ever."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.orchestrator.main import create_app
from tests.integration.orchestrator.conftest import TOKEN
from tests.support import fuzz_openapi


def test_no_server_errors_from_schema_generated_requests(
    orchestrator_settings, session_factory, generator_url
):
    # a generator that answers, for specs naming a teacher (asked of its /v1/models)
    settings = orchestrator_settings.model_copy(
        update={"generator_url": generator_url, "service_token": SecretStr(TOKEN)}
    )
    app = create_app(settings, drive_runs=False)
    with TestClient(app):  # runs the lifespan: database engine, clients
        sent = fuzz_openapi(app, TOKEN)
    assert len(sent) >= 1000, len(sent)
