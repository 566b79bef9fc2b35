"""The pass-through of a remote teacher's OpenAI routes, around a scripted upstream: names, errors
and streams. The real remote (a vLLM server) is tests/integration/generator/test_vllm.py's."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from services.generator.engines.protocol import OpenAIRequestError
from services.generator.engines.upstream_openai import UpstreamOpenAIServer

SEEN: list[httpx.Request] = []


def upstream(request: httpx.Request) -> httpx.Response:
    SEEN.append(request)
    body = json.loads(request.content)
    if body.get("logprobs") == 99:
        error = {"message": "logprobs: at most 20", "type": "BadRequestError", "param": "logprobs"}
        return httpx.Response(400, json={"error": error})
    if body.get("echo"):
        return httpx.Response(500, text="engine died")
    if body.get("user") == "bad-key":
        return httpx.Response(401, json={"error": {"message": "invalid api key"}})
    if body.get("user") == "proxy":
        return httpx.Response(200, text="<html>gateway</html>")
    if body.get("stream"):
        events = [{"model": body["model"], "choices": [{"index": 0, "text": w}]} for w in ("a", "b")]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json={"model": body["model"], "choices": [], "usage": {"total_tokens": 3}})


def server(transport: httpx.MockTransport | None = None) -> UpstreamOpenAIServer:
    client = httpx.AsyncClient(transport=transport or httpx.MockTransport(upstream))
    return UpstreamOpenAIServer("http://remote.test/v1", "org/model", "k", 5.0, client=client)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_body_goes_out_under_the_remote_name_and_comes_back_under_the_clients() -> None:
    SEEN.clear()
    out = run(server().completions({"model": "big", "prompt": "x", "frequency_penalty": 1.0}))
    sent = json.loads(SEEN[-1].content)
    assert str(SEEN[-1].url) == "http://remote.test/v1/completions"
    assert sent == {"model": "org/model", "prompt": "x", "frequency_penalty": 1.0}
    assert SEEN[-1].headers["authorization"] == "Bearer k"
    assert out["model"] == "big"
    run(server().tokenize({"model": "big", "prompt": "x"}))
    assert str(SEEN[-1].url) == "http://remote.test/tokenize"  # vLLM's, at the root


def test_a_stream_comes_through_event_by_event_renamed() -> None:
    async def collect() -> list[str]:
        events = await server().completions({"model": "big", "prompt": "x", "stream": True})
        assert not isinstance(events, dict)
        return [e async for e in events]

    events = run(collect())
    assert events[-1] == "data: [DONE]\n\n"
    assert [json.loads(e[len("data: ") :])["model"] for e in events[:-1]] == ["big", "big"]


def test_refusals_keep_their_status_and_param_and_failures_are_503() -> None:
    with pytest.raises(OpenAIRequestError) as refused:
        run(server().completions({"model": "big", "prompt": "x", "logprobs": 99}))
    assert (refused.value.status_code, refused.value.param) == (400, "logprobs")
    assert "at most 20" in str(refused.value)
    with pytest.raises(OpenAIRequestError) as failed:
        run(server().completions({"model": "big", "prompt": "x", "echo": True}))
    assert failed.value.status_code == 503 and "engine died" in str(failed.value)

    for user, said in [("bad-key", "invalid api key"), ("proxy", "without JSON")]:
        with pytest.raises(OpenAIRequestError) as misconfigured:  # the server's fault, not the client's
            run(server().completions({"model": "big", "prompt": "x", "user": user}))
        assert misconfigured.value.status_code == 503 and said in str(misconfigured.value)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(OpenAIRequestError) as down:
        run(server(httpx.MockTransport(unreachable)).chat({"model": "big", "messages": []}))
    assert down.value.status_code == 503 and "ConnectError" in str(down.value)
