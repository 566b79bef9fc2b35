"""OpenAI-compatible completions, chat completions and models, so teams can use the `openai`
client unchanged. Only the parameters the engines honour are accepted; others get a 422 that
names them (silently ignoring a parameter would return something the caller did not ask for)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from services.generator.config import GeneratorSettings
from services.generator.engines.protocol import (
    EngineError,
    EngineRejected,
    Sampling,
    TextEngine,
    derive_seed,
    engine_errors,
)
from services.generator.limits import Quota, Reservation
from services.generator.metrics import Metrics
from services.generator.prompts import CHAT_STOP
from shared.errors import InvalidInput, NotFound
from shared.schemas.base import InputModel, OutputModel

Text = Annotated[str, StringConstraints(max_length=200_000)]


class _Sampling(InputModel):
    model: str = Field(max_length=200)
    n: int = Field(default=1, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=-1, ge=-1, le=100000)  # vLLM's extension, sent via extra_body
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: str | list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=8
    )
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    user: str | None = Field(default=None, max_length=200)


class CompletionRequest(_Sampling):
    prompt: Text | list[Text] = Field(min_length=1)


class ChatMessage(InputModel):
    role: Literal["system", "user", "assistant"]
    content: Text


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionUsage(OutputModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(OutputModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(OutputModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ChatChoiceMessage(OutputModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(OutputModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(OutputModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class ModelCard(OutputModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gold"


class ModelList(OutputModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def served_names(engine: TextEngine) -> list[str]:
    model = engine.info.model
    return list(dict.fromkeys([model.model_id, model.name]))


def list_models(engine: TextEngine) -> ModelList:
    created = int(time.time())
    return ModelList(data=[ModelCard(id=name, created=created) for name in served_names(engine)])


def _check_model(engine: TextEngine, model: str) -> None:
    if model not in served_names(engine):
        raise NotFound(f"model {model!r} is not served here; GET /v1/models lists {served_names(engine)}")


def _sampling(body: _Sampling, max_tokens: int, seed: int | None) -> Sampling:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if isinstance(body, ChatCompletionRequest):
        stop += CHAT_STOP  # a base model continuing a transcript would write the user's turn too
    return Sampling(
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        max_tokens=max_tokens,
        seed=seed,
        stop=stop,
    )


async def _admit(
    quota: Quota,
    body: _Sampling,
    prompts: int,
    max_tokens: int,
    tokens_field: str = "max_tokens",
) -> Reservation:
    quota.check_caps(body.n * prompts, max_tokens, tokens_field=tokens_field)
    if body.stream and (body.n > 1 or prompts > 1):
        raise InvalidInput("stream", "streaming returns one completion: send n=1 and a single prompt")
    return await quota.reserve(body.n * prompts * max_tokens)


async def _run(engine: TextEngine, prompts: Sequence[str], body: _Sampling, max_tokens: int):  # noqa: ANN202
    samplings = [
        _sampling(
            body,
            max_tokens,
            None if body.seed is None else (body.seed if len(prompts) == 1 else derive_seed(body.seed, i)),
        )
        for i in range(len(prompts))
    ]
    with engine_errors("request"):
        return await engine.generate(prompts, samplings)


async def complete(
    engine: TextEngine,
    body: CompletionRequest,
    *,
    settings: GeneratorSettings,
    metrics: Metrics,
    quota: Quota,
) -> CompletionResponse | AsyncIterator[str]:
    _check_model(engine, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    max_tokens = body.max_tokens or 16  # OpenAI's default for completions
    held = await _admit(quota, body, len(prompts), max_tokens)
    if body.stream:
        return _stream(engine, prompts[0], body, max_tokens, "text_completion", metrics, held)
    results = await _run(engine, prompts, body, max_tokens)
    choices = [
        CompletionChoice(index=i * body.n + j, text=c.text, finish_reason=c.finish_reason)
        for i, result in enumerate(results)
        for j, c in enumerate(result.completions)
    ]
    usage = _usage(results)
    metrics.record_tokens(usage.prompt_tokens, usage.completion_tokens)
    held.used = usage.total_tokens
    return CompletionResponse(
        id=f"cmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=body.model,
        choices=choices,
        usage=usage,
    )


async def chat(
    engine: TextEngine,
    body: ChatCompletionRequest,
    *,
    settings: GeneratorSettings,
    metrics: Metrics,
    quota: Quota,
) -> ChatCompletionResponse | AsyncIterator[str]:
    _check_model(engine, body.model)
    prompt = engine.chat_prompt([m.model_dump() for m in body.messages])
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.generator_max_tokens // 4
    held = await _admit(quota, body, 1, max_tokens, tokens_field="max_completion_tokens")
    if body.stream:
        return _stream(engine, prompt, body, max_tokens, "chat.completion.chunk", metrics, held)
    results = await _run(engine, [prompt], body, max_tokens)
    choices = [
        ChatChoice(index=j, message=ChatChoiceMessage(content=c.text.strip()), finish_reason=c.finish_reason)
        for j, c in enumerate(results[0].completions)
    ]
    usage = _usage(results)
    metrics.record_tokens(usage.prompt_tokens, usage.completion_tokens)
    held.used = usage.total_tokens
    return ChatCompletionResponse(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=body.model,
        choices=choices,
        usage=usage,
    )


def _usage(results: Sequence) -> CompletionUsage:  # type: ignore[type-arg]
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(c.tokens for r in results for c in r.completions)
    return CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


async def _stream(
    engine: TextEngine,
    prompt: str,
    body: _Sampling,
    max_tokens: int,
    kind: str,
    metrics: Metrics,
    held: Reservation,
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. The tokens go on
    `held` as they come, so a stream cut short is settled with what it produced."""
    ident = f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    sampling = _sampling(body, max_tokens, body.seed)
    produced = 0
    held.used = engine.count_tokens(prompt)

    def event(delta: str | None, finish: str | None, first: bool = False) -> str:
        if kind == "text_completion":
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        else:
            message = (
                {"role": "assistant", "content": delta or ""}
                if first
                else ({"content": delta} if delta else {})
            )
            choice = {"index": 0, "delta": message, "finish_reason": finish, "logprobs": None}
        return (
            "data: "
            + json.dumps(
                {"id": ident, "object": kind, "created": created, "model": body.model, "choices": [choice]}
            )
            + "\n\n"
        )

    try:
        if kind != "text_completion":
            yield event("", None, first=True)
        finish: str | None = None
        async for delta in engine.stream(prompt, sampling):
            produced += delta.tokens
            held.used += delta.tokens
            finish = delta.finish_reason or finish
            if delta.text:
                yield event(delta.text, None)
        yield event(None, finish or "stop")
        yield "data: [DONE]\n\n"
    except (EngineError, EngineRejected) as exc:
        yield "data: " + json.dumps({"error": {"message": str(exc), "type": "upstream_error"}}) + "\n\n"
    finally:
        metrics.record_tokens(0, produced)
