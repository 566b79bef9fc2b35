"""gold.Client's logic around the orchestrator: answers mapped to typed errors with the API's message
and field, and the retries a 429 or 503 with Retry-After gets (honoured, bounded). The orchestrator is
stood in for by httpx.MockTransport here; tests/integration/orchestrator/test_python_client.py talks to
the real one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from gold import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    GoldError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnreachableError,
    ValidationError,
)
from shared.errors import error_body
from tests.support import finished_run_read, sentiment_task

RUN = finished_run_read({"name": "r", "task": sentiment_task()})


def answering(*answers: httpx.Response, sent: list[httpx.Request] | None = None) -> Client:
    """A client whose requests get `answers` in turn (the last one repeated); sleeps recorded."""
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        if sent is not None:
            sent.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    client = Client("http://orchestrator", "key", transport=httpx.MockTransport(handle), max_retries=3)
    client.slept = []  # type: ignore[attr-defined]
    client._sleep = client.slept.append  # type: ignore[attr-defined]
    return client


def error(status: int, code: str, message: str, detail=None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=error_body(code, message, detail), headers=headers)


def ok() -> httpx.Response:
    return httpx.Response(200, content=RUN.model_dump_json())


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, "unauthorized", AuthenticationError),
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (500, "internal_error", ServerError),
        (502, "upstream_error", ServerError),
        (418, "teapot", GoldError),
    ],
)
def test_each_status_is_its_error_with_the_apis_message(status, code, kind):
    client = answering(error(status, code, f"the API says {code}"))
    with pytest.raises(kind) as caught:
        client.get_run(RUN.id)
    assert type(caught.value) is kind
    assert caught.value.message == f"the API says {code}" and str(caught.value) == caught.value.message
    assert caught.value.status_code == status and caught.value.error == code
    assert caught.value.url == f"http://orchestrator/runs/{RUN.id}"
    assert caught.value.retryable == (status >= 500)
    assert client.slept == []  # type: ignore[attr-defined]  # none of these is retried by the client


def test_a_422_names_the_field():
    detail = [
        {"loc": ["loop", "selection_band"], "msg": "must be increasing", "type": "value_error"},
        {"loc": ["name"], "msg": "too long"},
    ]
    client = answering(error(422, "invalid_input", "invalid fields: loop.selection_band, name", detail))
    with pytest.raises(ValidationError) as caught:
        client.create_run({"name": "x"})
    assert caught.value.field == "loop.selection_band"
    assert caught.value.errors == [
        {"field": "loop.selection_band", "message": "must be increasing"},
        {"field": "name", "message": "too long"},
    ]
    assert caught.value.message == "invalid fields: loop.selection_band, name"
    assert str(caught.value) == "loop.selection_band: must be increasing; name: too long"  # what gold prints


def test_an_answer_that_is_not_the_apis_shape_keeps_its_text():
    client = answering(httpx.Response(502, text="Bad Gateway from the proxy"))
    with pytest.raises(ServerError, match="Bad Gateway from the proxy"):
        client.list_runs()


def test_a_429_with_retry_after_is_sent_again_after_that_wait():
    sent: list[httpx.Request] = []
    client = answering(
        error(429, "rate_limited", "slow down", **{"Retry-After": "2"}),
        error(429, "rate_limited", "slow down", **{"Retry-After": "0.5"}),
        httpx.Response(201, content=RUN.model_dump_json()),
        sent=sent,
    )
    assert client.create_run({"name": "r"}, idempotency_key="k").id == RUN.id
    assert client.slept == [2.0, 0.5]  # type: ignore[attr-defined]
    assert len(sent) == 3 and [json.loads(r.content) for r in sent] == [{"name": "r"}] * 3
    assert all(r.headers["Idempotency-Key"] == "k" for r in sent)


def test_retries_are_bounded_then_the_429_is_raised_with_its_wait():
    client = answering(error(429, "rate_limited", "slow down", **{"Retry-After": "1"}))
    with pytest.raises(RateLimitedError) as caught:
        client.get_run(RUN.id)
    assert client.slept == [1.0, 1.0, 1.0]  # type: ignore[attr-defined]  # max_retries=3
    assert caught.value.retry_after_s == 1.0 and caught.value.retryable


def test_a_wait_longer_than_allowed_is_left_to_the_caller():
    client = answering(error(429, "rate_limited", "slow down", **{"Retry-After": "3600"}), ok())
    with pytest.raises(RateLimitedError) as caught:
        client.get_run(RUN.id)
    assert client.slept == [] and caught.value.retry_after_s == 3600.0  # type: ignore[attr-defined]


def test_a_429_without_retry_after_backs_off():
    client = answering(error(429, "rate_limited", "slow down"), error(429, "rate_limited", "again"), ok())
    assert client.get_run(RUN.id) == RUN
    assert client.slept == [1.0, 2.0]  # type: ignore[attr-defined]


def test_a_503_is_retried_only_when_it_says_when():
    restarting = error(503, "database_unavailable", "the database is busy", **{"Retry-After": "2"})
    client = answering(restarting, ok())
    assert client.get_run(RUN.id) == RUN and client.slept == [2.0]  # type: ignore[attr-defined]
    with pytest.raises(ServerError, match="not ready"):
        answering(error(503, "not_ready", "not ready"), ok()).get_run(RUN.id)


def test_no_answer_is_unreachable_and_retryable():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = Client("http://orchestrator", transport=httpx.MockTransport(refuse))
    with pytest.raises(UnreachableError, match="ConnectError calling http://orchestrator/runs") as caught:
        client.list_runs()
    assert caught.value.retryable and caught.value.status_code is None


def test_polling_sends_the_etag_back_and_reuses_the_body_on_304():
    sent: list[httpx.Request] = []
    first = httpx.Response(200, content=RUN.model_dump_json(), headers={"ETag": '"v1"'})
    client = answering(first, httpx.Response(304, headers={"ETag": '"v1"'}), sent=sent)
    one, two = client.get_run(RUN.id), client.get_run(RUN.id)
    assert one == two == RUN and one is not two
    assert "If-None-Match" not in sent[0].headers and sent[1].headers["If-None-Match"] == '"v1"'


def test_wait_reports_each_change_and_stops_at_the_end():
    running = RUN.model_copy(update={"status": "running", "stage": "generate", "progress": 0.5})
    answers: list[Callable[[], httpx.Response]] = [
        lambda: httpx.Response(200, content=running.model_dump_json()),
        lambda: httpx.Response(200, content=running.model_dump_json()),
        ok,
    ]
    summary = {"run": json.loads(RUN.model_dump_json()), "iterations": [], "sample_counts": {}}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/summary"):
            return httpx.Response(200, json=summary)
        return answers.pop(0)()

    client = Client("http://orchestrator", transport=httpx.MockTransport(handle))
    client._sleep = lambda s: None
    seen: list[str] = []
    assert client.wait(RUN.id, on_progress=lambda r: seen.append(r.status)).run.status == "succeeded"
    assert seen == ["running", "succeeded"]  # the unchanged second poll is not reported


def test_the_async_client_honours_retry_after_too():
    answers = [error(429, "rate_limited", "slow down", **{"Retry-After": "1.5"}), ok()]
    slept: list[float] = []

    async def scenario() -> None:
        transport = httpx.MockTransport(lambda request: answers.pop(0))
        async with AsyncClient("http://orchestrator", transport=transport) as client:

            async def sleep(seconds: float) -> None:
                slept.append(seconds)

            client._sleep = sleep  # type: ignore[assignment]
            assert await client.get_run(RUN.id) == RUN
            with pytest.raises(NotFoundError, match="gone"):
                answers.append(error(404, "not_found", "gone"))
                await client.get_run(RUN.id)

    asyncio.run(scenario())
    assert slept == [1.5]
