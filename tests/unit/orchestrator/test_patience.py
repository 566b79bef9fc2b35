"""Which failures of a service a run's step waits out and for how long (services/orchestrator/
context.py: call_patiently, Patience), against a small scripted HTTP service called through the
real client, so the client's reading of each answer is part of what is tested. Time is virtual:
the waits advance a clock instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.orchestrator.context import Patience, StepFailed, call_patiently
from shared.clients import GeneratorClient
from shared.errors import UpstreamError
from tests.support import free_port, served


class Clock:
    """Virtual time: sleep() advances it and records the wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Service:
    """GET /v1/models answers the scripted statuses in turn ("slow": later than the client waits),
    then 200 with the model list."""

    def __init__(self, *script: int | str) -> None:
        self.script = list(script)
        self.hits = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> JSONResponse:
            self.hits += 1
            answer = self.script.pop(0) if self.script else 200
            if answer == "slow":
                await asyncio.sleep(1.0)
                answer = 200
            if answer == 200:
                return JSONResponse({"object": "list", "data": [{"id": "default"}]})
            return JSONResponse({"error": "scripted", "message": f"scripted {answer}"}, status_code=answer)

        return app


@contextlib.contextmanager
def client_of(service: Service) -> Iterator[GeneratorClient]:
    with served(service.app()) as url:
        client = GeneratorClient(url)
        try:
            yield client
        finally:
            client.close()


def test_the_services_own_troubles_are_waited_out_with_backoff():
    service = Service(503, 500, 502, 408, 429, "slow")
    clock, told = Clock(), []
    with client_of(service) as client:
        models = call_patiently(
            lambda: client.models(timeout_s=0.3),
            Patience(3600, clock),
            lambda error, n: told.append(n),
            clock.sleep,
        )
    assert models == ["default"]
    assert service.hits == 7
    assert told == [1, 2, 3, 4, 5, 6]
    assert clock.sleeps == [1, 2, 4, 8, 16, 20]  # doubling, at most 20 s


def test_an_unreachable_service_is_waited_for_until_it_is_back():
    port = free_port()  # nothing listens there yet: connection refused
    client = GeneratorClient(f"http://127.0.0.1:{port}")
    clock, reasons = Clock(), []
    with contextlib.ExitStack() as back:

        def sleep(seconds: float) -> None:
            clock.sleep(seconds)
            if len(clock.sleeps) == 3:  # the service comes back during the third wait
                back.enter_context(served(Service().app(), port))

        models = call_patiently(
            client.models, Patience(3600, clock), lambda error, n: reasons.append(error.message), sleep
        )
    client.close()
    assert models == ["default"]
    assert len(reasons) == 3
    assert all(r.startswith("generator: ") and "ConnectError" in r for r in reasons)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_an_error_that_is_the_requests_own_fails_the_step_at_once(status):
    service = Service(status)
    clock = Clock()
    with client_of(service) as client, pytest.raises(StepFailed) as failed:
        call_patiently(client.models, Patience(3600, clock), lambda error, n: None, clock.sleep)
    assert service.hits == 1 and clock.sleeps == []  # asked once: the same request gets the same answer
    assert str(failed.value).startswith("generator: ") and f"answered {status}" in str(failed.value)


def test_an_outage_past_the_patience_fails_the_step_naming_its_reason():
    service = Service(*[503] * 20)
    clock = Clock()
    with client_of(service) as client, pytest.raises(StepFailed) as failed:
        call_patiently(client.models, Patience(60, clock), lambda error, n: None, clock.sleep)
    # The last wait ends at the deadline, where one more attempt is made.
    assert clock.sleeps == [1, 2, 4, 8, 16, 20, 9] and clock.now == 60
    assert service.hits == 8
    message = str(failed.value)
    assert message.startswith("generator: ") and "answered 503" in message and "scripted 503" in message
    assert message.endswith("(gave up after 60 s of waiting; GOLD_DEPENDENCY_PATIENCE_S)")


def test_patience_counts_from_the_first_failure_of_each_outage():
    clock = Clock()
    patience = Patience(10, clock)
    assert patience.down("scorer: down") == 10
    clock.now = 6
    assert patience.down("scorer: down") == 4
    patience.up()  # it answered: the next outage has the whole patience again
    clock.now = 100
    assert patience.down("scorer: down") == 10
    clock.now = 109
    assert patience.down("scorer: down") == 1
    clock.now = 110
    with pytest.raises(StepFailed, match=r"^scorer: down \(gave up after 10 s of waiting"):
        patience.down("scorer: down")


def test_other_errors_are_not_waited_for():
    """A bug in the caller (not an UpstreamError) is not a service's outage: it propagates."""
    clock = Clock()

    def broken() -> None:
        raise KeyError("labels")

    with pytest.raises(KeyError):
        call_patiently(broken, Patience(60, clock), lambda error, n: None, clock.sleep)
    assert clock.sleeps == []


def test_the_retryable_flag_is_the_decision():
    """What call_patiently reads; the client sets it (the tests above go through the client)."""
    clock = Clock()
    errors = [UpstreamError("scorer", "unreachable", 503, retryable=True)]

    def once_down() -> str:
        if errors:
            raise errors.pop()
        return "answer"

    assert call_patiently(once_down, Patience(60, clock), lambda error, n: None, clock.sleep) == "answer"
    assert clock.sleeps == [1]
