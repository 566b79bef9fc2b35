"""Quotas shared by generator replicas through one real Redis, and token reservations settled on
every route: with the real usage on success, released on error and on cancellation, a dropped
stream charged what it produced. A scripted engine stands in for the model (the logic around the
engine is what is tested); the quota store is the embedded Redis throughout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings, KeyPolicy
from services.generator.engines.openai import OpenAIEngine
from services.generator.main import create_app
from services.generator.model_store import ResolvedModel
from services.generator.prompts import chat_transcript
from tests.integration.generator.conftest import wait_ready
from tests.support import SENTIMENT_TASK
from tests.unit.generator.fakes import FakeEngine

TOKEN = "team-a-secret"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TASK = SENTIMENT_TASK
INPUTS = [{"text": "Loved every minute of it."}, {"text": "A tedious, boring mess."}, {"text": "Fine."}]
MESSAGES = [{"role": "user", "content": "Tell me about rivers"}]
WORDS = FakeEngine().count_tokens  # the fake engine's tokenizer: one token a word


def make_app(engine: Any, redis_url: str, **overrides: Any) -> FastAPI:
    settings = GeneratorSettings(api_keys={"team-a": TOKEN}, redis_url=redis_url, **overrides)
    return create_app(settings, engine=engine)


@contextmanager
def serving(engine: Any, redis_url: str, **overrides: Any) -> Iterator[tuple[TestClient, Callable[[], int]]]:
    """A client of one replica, and the tokens team-a has used this minute, read from Redis."""
    app = make_app(engine, redis_url, **overrides)
    with TestClient(app) as client:
        wait_ready(client, 10)
        yield client, lambda: client.portal.call(app.state.limiter.tokens_used, "team-a")  # type: ignore[union-attr]


def usage_total(body: dict[str, Any]) -> int:
    return body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


# Each route: its request, and the tokens a success is settled with (read from its response).
ROUTES: dict[str, tuple[str, dict[str, Any], Callable[[dict[str, Any]], int]]] = {
    "generate": ("/v1/generate", {"task": TASK, "n": 4, "sampling": {"max_tokens": 40}}, usage_total),
    "attributes": ("/v1/attributes", {"task": TASK, "n": 5, "sampling": {"max_tokens": 30}}, usage_total),
    "classify": ("/v1/classify", {"task": TASK, "inputs": INPUTS}, lambda _: len(INPUTS) * 2),
    "answer": ("/v1/answer", {"task": TASK, "inputs": INPUTS, "max_tokens": 8}, usage_total),
    "completions": (
        "/v1/completions",
        {"model": "default", "prompt": ["Once upon", "a time"], "n": 2, "max_tokens": 30},
        lambda body: body["usage"]["total_tokens"],
    ),
    "chat": (
        "/v1/chat/completions",
        {"model": "default", "messages": MESSAGES, "max_tokens": 30},
        lambda body: body["usage"]["total_tokens"],
    ),
}


@pytest.mark.parametrize("route", ROUTES)
def test_a_success_is_charged_what_it_used(route: str, redis_url: str) -> None:
    path, body, used = ROUTES[route]
    with serving(FakeEngine(), redis_url) as (client, tokens_used):
        response = client.post(path, json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        assert used(response.json()) > 0
        assert tokens_used() == used(response.json())


@pytest.mark.parametrize("route", ROUTES)
def test_a_failed_engine_call_releases_its_reservation(route: str, redis_url: str) -> None:
    path, body, _ = ROUTES[route]
    with serving(FakeEngine(fail=True), redis_url) as (client, tokens_used):
        response = client.post(path, json=body, headers=HEADERS)
        assert response.status_code == 503, response.text
        assert tokens_used() == 0


def failing_upstream(request: httpx.Request) -> httpx.Response:
    """An OpenAI-compatible server that lists its model and then fails every completion."""
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"object": "list", "data": [{"id": "up/model", "object": "model"}]})
    return httpx.Response(500, json={"error": {"message": "out of memory"}}, headers={"retry-after-ms": "1"})


@pytest.mark.parametrize("route", ["completions", "chat", "generate"])
def test_a_failed_openai_engine_call_releases_its_reservation(route: str, redis_url: str) -> None:
    settings = GeneratorSettings(
        generator_engine="openai", generator_openai_base_url="http://upstream.test/v1"
    )
    engine = OpenAIEngine(
        settings,
        ResolvedModel("default", "up/model", "http://upstream.test/v1", None),
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(failing_upstream)),
    )
    path, body, _ = ROUTES[route]
    with serving(engine, redis_url) as (client, tokens_used):
        request = body if route == "generate" else {**body, "model": "up/model"}
        response = client.post(path, json=request, headers=HEADERS)
        assert response.status_code == 503 and "out of memory" in response.text
        assert tokens_used() == 0


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_a_stream_is_charged_its_prompt_and_what_it_produced(redis_url: str) -> None:
    engine = FakeEngine()
    with serving(engine, redis_url) as (client, tokens_used):
        body = {"model": "default", "messages": MESSAGES, "max_tokens": 30, "stream": True}
        response = client.post("/v1/chat/completions", json=body, headers=HEADERS)
        assert response.status_code == 200
        produced = sum(1 for e in sse(response) if e["choices"][0]["delta"].get("content"))
        assert produced > 0
        assert tokens_used() == WORDS(chat_transcript(MESSAGES)) + produced


def test_a_stream_the_engine_breaks_is_charged_what_it_produced(redis_url: str) -> None:
    with serving(FakeEngine(fail=True), redis_url) as (client, tokens_used):
        body = {"model": "default", "prompt": "Once upon a time", "max_tokens": 30, "stream": True}
        response = client.post("/v1/completions", json=body, headers=HEADERS)
        lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert "mid-stream" in lines[-1]
        produced = len(lines) - 1
        assert tokens_used() == WORDS("Once upon a time") + produced < 30


class Exchange:
    """One HTTP request driven through the ASGI app by hand, as uvicorn would: the client can
    drop the connection after some body chunks, and the task can be cancelled."""

    def __init__(self, app: FastAPI, path: str, body: dict[str, Any], disconnect_after: int | None = None):
        self.payload = json.dumps(body).encode()
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self.payload)).encode()),
                (b"authorization", HEADERS["Authorization"].encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.app = app
        self.disconnect_after = disconnect_after
        self.chunks: list[bytes] = []
        self._gone = asyncio.Event()
        self._sent_body = False

    async def receive(self) -> dict[str, Any]:
        if not self._sent_body:
            self._sent_body = True
            return {"type": "http.request", "body": self.payload, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            self.chunks.append(message["body"])
            if self.disconnect_after is not None and len(self.chunks) >= self.disconnect_after:
                self._gone.set()

    async def run(self) -> None:
        await self.app(self.scope, self.receive, self.send)


async def started(app: FastAPI) -> None:
    for _ in range(200):
        if app.state.teachers.default.engine is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the engine did not start")


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["generate", "classify", "answer", "completions", "chat"])
async def test_a_cancelled_request_releases_its_reservation(route: str, redis_url: str) -> None:
    engine = FakeEngine(delay_s=30)
    app = make_app(engine, redis_url)
    path, body, _ = ROUTES[route]
    async with app.router.lifespan_context(app):
        await started(app)
        limiter = app.state.limiter
        task = asyncio.create_task(Exchange(app, path, body).run())
        while await limiter.tokens_used("team-a") == 0:  # reserved, and waiting on the engine
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await limiter.tokens_used("team-a") == 0


@pytest.mark.anyio
async def test_a_stream_the_client_drops_is_charged_what_it_produced(redis_url: str) -> None:
    app = make_app(FakeEngine(delay_s=2.0), redis_url)
    body = {"model": "default", "prompt": "Once upon a time", "max_tokens": 30, "stream": True}
    async with app.router.lifespan_context(app):
        await started(app)
        exchange = Exchange(app, "/v1/completions", body, disconnect_after=3)
        await asyncio.wait_for(exchange.run(), 10)
        assert len(exchange.chunks) == 3  # the stream stopped when the client left
        assert await app.state.limiter.tokens_used("team-a") == WORDS("Once upon a time") + 3


def test_two_replicas_share_one_quota_through_redis(redis_url: str) -> None:
    policies = {"team-a": KeyPolicy(requests_per_minute=3, tokens_per_minute=1000)}
    with (
        serving(FakeEngine(), redis_url, generator_key_policies=policies) as (first, used_first),
        serving(FakeEngine(), redis_url, generator_key_policies=policies) as (second, used_second),
    ):
        path, body, used = ROUTES["generate"]
        response = first.post(path, json=body, headers=HEADERS)
        assert response.status_code == 200
        spent = used(response.json())
        assert used_second() == used_first() == spent  # the second replica sees the first's usage
        left = 1000 - spent
        over = {"model": "default", "prompt": "x", "max_tokens": left + 1}
        refused = second.post("/v1/completions", json=over, headers=HEADERS)
        assert refused.status_code == 429 and "token limit of 1000" in refused.json()["error"]["message"]
        assert first.post(path, json=body | {"n": 1}, headers=HEADERS).status_code == 200
        # Three requests of the minute so far (the refused one did not count): one more fits.
        assert second.post(path, json=body | {"n": 1}, headers=HEADERS).status_code == 200
        limited = first.post(path, json=body | {"n": 1}, headers=HEADERS)
        assert limited.status_code == 429 and "3 requests per minute" in limited.json()["message"]
