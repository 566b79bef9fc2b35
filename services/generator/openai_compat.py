"""OpenAI-compatible completions, chat completions, tokenize/detokenize and models, so teams can use
the `openai` client (or anything built on it) unchanged.

This module is what the generator puts in front of an OpenAI server: the model check, the per-key
caps and token reservation, and usage metrics. The serving itself is the engine's: vLLM's own
OpenAI serving classes on the vllm engine (engines/vllm_openai.py), the basic layer elsewhere
(basic_openai.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from services.generator.basic_openai import BasicOpenAIServer
from services.generator.config import GeneratorSettings
from services.generator.engines.protocol import OpenAIResult, OpenAIServer, TextEngine
from services.generator.limits import KeyLimiter
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
from shared.errors import NotFound

# OpenAI's default max_tokens for completions
COMPLETION_MAX_TOKENS = 16


def served_names(engine: TextEngine) -> list[str]:
    model = engine.info.model
    return list(dict.fromkeys([model.model_id, model.name]))


def list_models(engine: TextEngine) -> ModelList:
    created = int(time.time())
    return ModelList(data=[ModelCard(id=name, created=created) for name in served_names(engine)])


def _check_model(engine: TextEngine, model: str | None) -> None:
    if model is not None and model not in served_names(engine):
        raise NotFound(f"model {model!r} is not served here; GET /v1/models lists {served_names(engine)}")


def _server(engine: TextEngine) -> OpenAIServer:
    return engine.openai_server() or BasicOpenAIServer(engine)


def _prompt_count(prompt: object) -> int:
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        return 1
    return len(prompt)  # type: ignore[arg-type]


async def complete(
    engine: TextEngine,
    body: CompletionRequest,
    *,
    metrics: Metrics,
    limiter: KeyLimiter,
    key: str | None,
) -> OpenAIResult:
    _check_model(engine, body.model)
    max_tokens = body.max_tokens or COMPLETION_MAX_TOKENS
    wire = {**body.wire(), "max_tokens": max_tokens}
    completions = (body.n or 1) * _prompt_count(body.prompt)
    return await _serve(
        _server(engine).completions, wire, body, completions, max_tokens, "max_tokens", metrics, limiter, key
    )


async def chat(
    engine: TextEngine,
    body: ChatCompletionRequest,
    *,
    settings: GeneratorSettings,
    metrics: Metrics,
    limiter: KeyLimiter,
    key: str | None,
) -> OpenAIResult:
    _check_model(engine, body.model)
    # An explicit bound (vLLM's own default is the rest of the context), so the reservation is known.
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.generator_max_tokens // 4
    wire = {**body.wire(), "max_completion_tokens": max_tokens}
    wire.pop("max_tokens", None)
    return await _serve(
        _server(engine).chat,
        wire,
        body,
        body.n or 1,
        max_tokens,
        "max_completion_tokens",
        metrics,
        limiter,
        key,
    )


async def tokenize(
    engine: TextEngine, body: TokenizeRequest, *, limiter: KeyLimiter, key: str | None
) -> dict[str, Any]:
    _check_model(engine, body.model)
    limiter.reserve(key, 0)  # counts the request
    return await _server(engine).tokenize(body.wire())


async def detokenize(
    engine: TextEngine, body: DetokenizeRequest, *, limiter: KeyLimiter, key: str | None
) -> dict[str, Any]:
    _check_model(engine, body.model)
    limiter.reserve(key, 0)
    return await _server(engine).detokenize(body.wire())


async def _serve(
    call: Callable[[dict[str, Any]], Awaitable[OpenAIResult]],
    wire: dict[str, Any],
    body: SamplingFields,
    completions: int,
    max_tokens: int,
    tokens_field: str,
    metrics: Metrics,
    limiter: KeyLimiter,
    key: str | None,
) -> OpenAIResult:
    limiter.check_caps(key, completions, max_tokens, tokens_field=tokens_field)
    reserved = limiter.reserve(key, completions * max_tokens)
    asked_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:  # the last event then carries the usage the reservation is settled with
        wire["stream_options"] = {**wire.get("stream_options", {}), "include_usage": True}
    result = await call(wire)
    if isinstance(result, dict):
        _settle(result.get("usage"), reserved, metrics, limiter, key)
        return result
    return _metered(result, asked_usage, reserved, metrics, limiter, key)


async def _metered(
    events: AsyncIterator[str],
    asked_usage: bool,
    reserved: int,
    metrics: Metrics,
    limiter: KeyLimiter,
    key: str | None,
) -> AsyncIterator[str]:
    """The events as they come, the usage event taken out unless the client asked for it."""
    usage: dict[str, int] | None = None
    try:
        async for event in events:
            if '"usage"' in event and event.startswith("data: {"):
                chunk = json.loads(event[len("data: ") :])
                usage = chunk.get("usage") or usage
                if not asked_usage and not chunk.get("choices"):
                    continue
            yield event
    finally:
        _settle(usage, reserved, metrics, limiter, key)


def _settle(
    usage: dict[str, int] | None, reserved: int, metrics: Metrics, limiter: KeyLimiter, key: str | None
) -> None:
    if usage is None:  # a stream the client left before its end: the reservation stands
        return
    metrics.record_tokens(usage["prompt_tokens"], usage.get("completion_tokens") or 0)
    limiter.settle(key, reserved, usage["total_tokens"])
