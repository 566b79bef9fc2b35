"""Property-based requests generated from the orchestrator's own OpenAPI schema: no 5xx, ever.
100 examples per operation, derandomized (fixed seed) so CI is repeatable."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from services.orchestrator.main import create_app
from tests.integration.orchestrator.conftest import TOKEN

EXAMPLES_PER_OPERATION = 100


def test_no_server_errors_from_schema_generated_requests(orchestrator_settings, session_factory):
    app = create_app(orchestrator_settings, drive_runs=False)
    sent: list[tuple[str, int]] = []
    with TestClient(app):  # runs the lifespan: database engine, clients
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:
                response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
                sent.append((f"{case.method} {case.path}", response.status_code))
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )

            check()
    assert len(sent) >= 1000, len(sent)
