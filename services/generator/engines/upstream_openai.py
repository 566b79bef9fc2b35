"""OpenAI's API on a remote (`openai`) teacher: the client's body goes to the upstream server as it
is, under the model's name there, and the upstream's answer comes back under the name the client
used. Whatever the upstream serves (vLLM's server: logprobs, echo, penalties, response_format,
content parts, usage in streams, /tokenize and /detokenize) is served here the same, and what it
refuses is refused with its own status and OpenAI error (`param` included). The generator's auth,
limits and metrics stay in front (services/generator/openai_compat.py); a stream asks for usage on
every event (vLLM's `continuous_usage_stats`), as on the local vllm engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from services.generator.engines.protocol import OpenAIRequestError, OpenAIResult


class UpstreamOpenAIServer:
    """`base_url` is the upstream's OpenAI base (`http://host:8000/v1`); /tokenize and /detokenize
    are vLLM's, at the server's root."""

    def __init__(
        self,
        base_url: str,
        model_id: str,
        api_key: str,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,  # tests pass an in-process transport
    ):
        self._own_client = client is None
        self._client = client or httpx.AsyncClient()
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._base = base_url.rstrip("/")
        self._root = self._base.removesuffix("/v1")
        self._model_id = model_id
        self._timeout = httpx.Timeout(timeout_s)

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def completions(self, body: dict[str, Any]) -> OpenAIResult:
        return await self._send(f"{self._base}/completions", body)

    async def chat(self, body: dict[str, Any]) -> OpenAIResult:
        return await self._send(f"{self._base}/chat/completions", body)

    async def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        result = await self._send(f"{self._root}/tokenize", body)
        assert isinstance(result, dict)
        return result

    async def detokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        result = await self._send(f"{self._root}/detokenize", body)
        assert isinstance(result, dict)
        return result

    async def _send(self, url: str, body: dict[str, Any]) -> OpenAIResult:
        name = body.get("model")
        request = self._client.build_request(
            "POST", url, json={**body, "model": self._model_id}, headers=self._headers, timeout=self._timeout
        )
        try:
            response = await self._client.send(request, stream=bool(body.get("stream")))
        except httpx.HTTPError as exc:
            raise OpenAIRequestError(503, f"upstream {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise _upstream_error(response)
        if body.get("stream"):
            return _events(response, name)
        try:
            payload = response.json()
        except ValueError as exc:
            raise OpenAIRequestError(
                503, f"upstream {url} answered {response.status_code} without JSON"
            ) from exc
        return _renamed(payload, name)


def _renamed(payload: dict[str, Any], name: str | None) -> dict[str, Any]:
    """The response under the model name the client asked for (the upstream's own when none)."""
    return {**payload, "model": name} if name and "model" in payload else payload


async def _events(response: httpx.Response, name: str | None) -> AsyncIterator[str]:
    """The upstream's server-sent events, each `data: ...` line as one event, renamed."""
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data.startswith("{"):
                data = json.dumps(_renamed(json.loads(data), name), separators=(",", ":"))
            yield f"data: {data}\n\n"
    except httpx.HTTPError as exc:
        error = {"error": {"message": f"upstream stream broke: {exc}", "type": "upstream_error"}}
        yield f"data: {json.dumps(error)}\n\n"
    finally:
        await response.aclose()


def _upstream_error(response: httpx.Response) -> OpenAIRequestError:
    """The upstream's refusal as it gave it: OpenAI's `{"error": {...}}` or vLLM's older flat shape.
    Its own failures (5xx), and its refusal of the generator's key (401, 403: this server's
    configuration, not the client's), are a 503 here, never a 500."""
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    error = payload.get("error", payload) if isinstance(payload, dict) else {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = str(error.get("message") or response.text[:500] or response.reason_phrase)
    status = (
        503 if response.status_code >= 500 or response.status_code in (401, 403) else response.status_code
    )
    return OpenAIRequestError(status, f"upstream: {message}", error.get("param"), error.get("type"))
