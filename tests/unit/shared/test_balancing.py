"""Several generators behind one client (shared/balancing.py through shared/clients.py), against two
real HTTP servers: round-robin over the healthy ones, a dead or not-ready one skipped and retried
later, errors naming the URL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from shared.clients import GeneratorClient
from shared.errors import UpstreamError
from shared.schemas.generation import ServedModels
from tests.support import free_port


class Replica:
    """A small HTTP server answering GET /v1/models with its own name as the model, and /readyz."""

    def __init__(self, name: str, port: int | None = None):
        self.name, self.port = name, port or free_port()
        self.ready = True
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> JSONResponse:
            if not self.ready:
                return JSONResponse({"error": "not_ready"}, status_code=503)
            return JSONResponse({"object": "list", "data": [{"id": self.name}]})

        @app.get("/v1/broken")
        def broken() -> JSONResponse:
            return JSONResponse({"error": "invalid_input"}, status_code=422)

        @app.get("/readyz")
        def readyz() -> JSONResponse:
            return JSONResponse({}, status_code=200 if self.ready else 503)

        return app

    def start(self) -> Replica:
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, f"{self.name} did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture
def replicas() -> Iterator[tuple[Replica, Replica]]:
    a, b = Replica("a").start(), Replica("b").start()
    yield a, b
    for replica in (a, b):
        if replica._thread is not None and replica._thread.is_alive():
            replica.stop()


def _served(client: GeneratorClient, n: int) -> list[str]:
    return [client.models()[0] for _ in range(n)]


def test_round_robin_over_healthy_generators(replicas):
    a, b = replicas
    client = GeneratorClient(f"{a.url},{b.url}".split(","))
    served = _served(client, 6)
    assert sorted(served) == ["a"] * 3 + ["b"] * 3
    assert all(x != y for x, y in zip(served, served[1:], strict=False))  # alternating
    assert client.ready() and client.replicas.down() == []


def test_a_dead_generator_is_skipped_and_retried_later(replicas):
    a, b = replicas
    client = GeneratorClient([a.url, b.url], retry_after_s=0.5)
    b.stop()
    assert _served(client, 4) == ["a"] * 4  # no request fails: the one that hit b went on to a
    assert client.replicas.down() == [b.url]

    back = Replica("b", b.port).start()  # on the same address
    try:
        assert _served(client, 2) == ["a"] * 2  # still skipped within retry_after_s
        time.sleep(0.6)
        assert "b" in _served(client, 4)  # probed (/readyz) and in the rotation again
        assert client.replicas.down() == []
    finally:
        back.stop()


def test_a_generator_that_is_not_ready_is_skipped(replicas):
    a, b = replicas
    client = GeneratorClient([a.url, b.url], retry_after_s=60)
    a.ready = False
    assert _served(client, 3) == ["b"] * 3
    assert client.replicas.down() == [a.url]


def test_errors_name_the_url(replicas):
    a, b = replicas
    dead = f"http://127.0.0.1:{free_port()}"
    client = GeneratorClient([dead, a.url], retry_after_s=60)
    a.ready = False
    with pytest.raises(UpstreamError) as caught:
        client.models()
    message = str(caught.value)
    assert caught.value.retryable and f"ConnectError calling {dead}/v1/models" in message
    assert f"{a.url}/v1/models answered 503" in message

    # A request the generator refused is not sent elsewhere and does not make it count as down.
    one = GeneratorClient([b.url, a.url])
    with pytest.raises(UpstreamError, match=f"{b.url}/v1/broken answered 422"):
        one._request("GET", "/v1/broken", ServedModels)
    assert one.replicas.down() == []


def test_a_single_generator_is_always_tried():
    """One URL (the default): a failure does not keep the next request from trying it."""
    replica = Replica("solo")
    client = GeneratorClient(replica.url, retry_after_s=3600)
    with pytest.raises(UpstreamError, match=f"ConnectError calling {replica.url}/v1/models"):
        client.models()
    replica.start()
    try:
        assert client.models() == ["solo"]
    finally:
        replica.stop()
