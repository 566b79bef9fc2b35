"""OpenAI-compatible completions, chat completions, tokenize/detokenize and models, so teams can use
the `openai` client (or anything built on it) unchanged.

This module is what the generator puts in front of an OpenAI server: the teacher the request's
`model` names (an unknown one is a 404 naming `model`, services/generator/teachers.py), the per-key
caps and token reservation, and usage metrics. The serving itself is the engine's: vLLM's own
OpenAI serving classes on the vllm engine (engines/vllm_openai.py), the remote server itself on
an `openai` teacher (engines/upstream_openai.py), the basic layer elsewhere (basic_openai.py).

The request's quota (held by the route's dependency) settles the reservation when the request
ends, with what `held.use` recorded last: the response's usage, or for a stream the usage of the
last event that reached this layer (every event carries it here), so a stream the engine breaks
or the client leaves is charged its prompt and what it produced; an error before any usage
releases the reservation.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from services.generator.basic_openai import BasicOpenAIServer
from services.generator.config import GeneratorSettings
from services.generator.engines.protocol import OpenAIResult, OpenAIServer, TextEngine
from services.generator.limits import Quota, Reservation
from services.generator.metrics import Metrics
from services.generator.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ModelCard,
    ModelList,
    SamplingFields,
    TokenizeRequest,
)
from services.generator.teachers import Teachers

# OpenAI's default max_tokens for completions
COMPLETION_MAX_TOKENS = 16


def list_models(teachers: Teachers) -> ModelList:
    created = int(time.time())
    return ModelList(data=[ModelCard(id=name, created=created) for name in teachers.names()])


def _server(engine: TextEngine) -> OpenAIServer:
    return engine.openai_server() or BasicOpenAIServer(engine)


def _prompt_count(prompt: object) -> int:
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        return 1
    return len(prompt)  # type: ignore[arg-type]


async def complete(
    teachers: Teachers, body: CompletionRequest, *, metrics: Metrics, quota: Quota
) -> OpenAIResult:
    engine = teachers.engine(body.model)
    max_tokens = body.max_tokens or COMPLETION_MAX_TOKENS
    wire = {**body.wire(), "max_tokens": max_tokens}
    completions = (body.n or 1) * _prompt_count(body.prompt)
    return await _serve(
        _server(engine).completions, wire, body, completions, max_tokens, "max_tokens", metrics, quota
    )


async def chat(
    teachers: Teachers,
    body: ChatCompletionRequest,
    *,
    settings: GeneratorSettings,
    metrics: Metrics,
    quota: Quota,
) -> OpenAIResult:
    engine = teachers.engine(body.model)
    # An explicit bound (vLLM's own default is the rest of the context), so the reservation is known.
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.generator_max_tokens // 4
    wire = {**body.wire(), "max_completion_tokens": max_tokens}
    wire.pop("max_tokens", None)
    return await _serve(
        _server(engine).chat, wire, body, body.n or 1, max_tokens, "max_completion_tokens", metrics, quota
    )


async def tokenize(teachers: Teachers, body: TokenizeRequest, *, quota: Quota) -> dict[str, Any]:
    engine = teachers.engine(body.model)
    await quota.reserve(0)  # counts the request
    return await _server(engine).tokenize(body.wire())


async def detokenize(teachers: Teachers, body: DetokenizeRequest, *, quota: Quota) -> dict[str, Any]:
    engine = teachers.engine(body.model)
    await quota.reserve(0)
    return await _server(engine).detokenize(body.wire())


async def _serve(
    call: Callable[[dict[str, Any]], Awaitable[OpenAIResult]],
    wire: dict[str, Any],
    body: SamplingFields,
    completions: int,
    max_tokens: int,
    tokens_field: str,
    metrics: Metrics,
    quota: Quota,
) -> OpenAIResult:
    held = await quota.hold(completions, max_tokens, tokens_field=tokens_field)
    asked = body.stream_options.model_dump() if body.stream_options else {}
    if body.stream:  # every event then carries the usage so far: what a cut stream is charged
        wire["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    result = await call(wire)
    if isinstance(result, dict):
        usage = result["usage"]
        prompt_tokens, completion_tokens = usage["prompt_tokens"], usage.get("completion_tokens") or 0
        held.use(prompt_tokens, completion_tokens)
        metrics.record_tokens(prompt_tokens, completion_tokens)
        return result
    return _metered(
        result,
        StreamUsage(body.n or 1),
        held,
        metrics,
        asked_usage=bool(asked.get("include_usage")),
        asked_continuous=bool(asked.get("include_usage") and asked.get("continuous_usage_stats")),
    )


class StreamUsage:
    """The tokens a stream has used so far, read from its events: each choice's event carries its
    prompt's tokens and that choice's completion tokens so far (vLLM's continuous usage stats;
    choice i answers prompt i // n), the final event the request's totals."""

    def __init__(self, n: int):
        self.n = n
        self._prompts: dict[int, int] = {}
        self._completions: dict[int, int] = {}
        self._final: dict[str, int] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if not usage:
            return
        if not chunk.get("choices"):
            self._final = usage
            return
        for choice in chunk["choices"]:
            index = choice["index"]
            self._prompts[index // self.n] = usage["prompt_tokens"]
            self._completions[index] = usage.get("completion_tokens") or 0

    @property
    def prompt_tokens(self) -> int:
        return self._final["prompt_tokens"] if self._final else sum(self._prompts.values())

    @property
    def completion_tokens(self) -> int:
        if self._final:
            return self._final.get("completion_tokens") or 0
        return sum(self._completions.values())


async def _metered(
    events: AsyncIterator[str],
    usage: StreamUsage,
    held: Reservation,
    metrics: Metrics,
    *,
    asked_usage: bool,
    asked_continuous: bool,
) -> AsyncIterator[str]:
    """The events as they come, their usage recorded on `held` before each is sent; the usage the
    client did not ask for (on every event, the final usage event) taken out."""
    try:
        async for event in events:
            if event.startswith("data: {"):
                chunk = json.loads(event[len("data: ") :])
                usage.add(chunk)
                held.use(usage.prompt_tokens, usage.completion_tokens)
                if "usage" in chunk and not asked_continuous:
                    if not chunk.get("choices"):
                        if not asked_usage:
                            continue
                    else:
                        del chunk["usage"]
                        event = f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
            yield event
    finally:
        metrics.record_tokens(usage.prompt_tokens, usage.completion_tokens)
