"""Property-based requests generated from the generator's own OpenAPI schema (the serving logic,
with a scripted engine standing in for the model): no 5xx, ever."""

from __future__ import annotations

from tests.integration.generator.conftest import wait_ready
from tests.integration.generator.test_api import TOKEN, make_client
from tests.support import fuzz_openapi
from tests.unit.generator.fakes import FakeEngine


def test_no_server_errors_from_schema_generated_requests():
    with make_client(FakeEngine(), generator_requests_per_minute=1_000_000) as client:
        wait_ready(client, 10)
        sent = fuzz_openapi(client.app, TOKEN, examples_per_operation=150)
    assert len(sent) >= 500, len(sent)
    statuses = {status for _, status in sent}
    assert statuses & {200, 201} and statuses & {400, 413, 422}, statuses  # both sides were exercised
