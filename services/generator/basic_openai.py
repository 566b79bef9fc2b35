"""OpenAI's API for engines without their own OpenAI serving code (llamacpp, hf, test fakes),
through `TextEngine.generate` and `stream`. It honours n, stop, seed, temperature, top_p, top_k,
max_tokens, streaming (n=1, one prompt) and usage in streams (at the end, and on every event with
vLLM's continuous_usage_stats); on an engine that scores prompts (a LogprobEngine: llamacpp) also a
completion's `logprobs` and `echo`, and token-id prompts (lm-evaluation-harness's local-completions).
Any other parameter a client sets is refused with OpenAI's error shape naming it (the vllm engine
serves all of them)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from services.generator.engines.protocol import (
    EngineError,
    EngineRejected,
    LogprobEngine,
    OpenAIRequestError,
    OpenAIResult,
    PromptResult,
    Sampling,
    TextEngine,
    TokenLogprob,
    derive_seed,
)
from services.generator.openai_schemas import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    DetokenizeRequest,
    SamplingFields,
    TokenizeCompletionRequest,
)
from services.generator.prompts import CHAT_STOP

# What the basic layer cannot do, by parameter; a value equal to the default is no request.
_UNSUPPORTED_DEFAULTS: dict[str, object] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "frequency_penalty": (None, 0.0),
    "presence_penalty": (None, 0.0),
    "logit_bias": (None, {}),
}


class BasicOpenAIServer:
    def __init__(self, engine: TextEngine):
        self.engine = engine

    def _refuse(self, param: str, what: str = "") -> OpenAIRequestError:
        return OpenAIRequestError(
            400,
            f"{param}: {what or 'not supported'} by the {self.engine.info.engine} engine "
            "(the vllm engine supports it)",
            param,
        )

    def _check_supported(self, body: SamplingFields) -> None:
        scored = isinstance(body, CompletionRequest) and self.engine.info.supports_logprobs
        for param, defaults in _UNSUPPORTED_DEFAULTS.items():
            if scored and param in ("logprobs", "echo"):
                continue  # served below with the engine's prompt_logprobs
            value = getattr(body, param, None)
            if value not in defaults:  # type: ignore[operator]
                raise self._refuse(param)
        if body.response_format is not None and body.response_format.type != "text":
            raise self._refuse("response_format", f"{body.response_format.type} output is not supported")

    async def completions(self, body: dict[str, Any]) -> OpenAIResult:
        request = CompletionRequest.model_validate(body)
        self._check_supported(request)
        given = _prompts(request.prompt)
        scorer = cast(LogprobEngine, self.engine) if self.engine.info.supports_logprobs else None
        if scorer is None and not all(isinstance(p, str) for p in given):
            raise self._refuse("prompt", "token ids as a prompt are not supported")
        texts = [p if isinstance(p, str) else cast(LogprobEngine, scorer).detokenize(p) for p in given]
        if request.stream:
            if request.echo or request.logprobs is not None:
                raise self._refuse("stream", "streaming with logprobs or echo is not supported")
            return self._stream(texts, request, "text_completion")
        results = await self._run(texts, request)
        # echo is refused above for an engine that cannot score prompts (_check_supported)
        echoed = await self._echoed(cast(LogprobEngine, scorer), given, request) if request.echo else None
        n = request.n or 1
        choices = [
            CompletionChoice(
                index=i * n + j,
                text=(texts[i] if request.echo else "") + c.text,
                finish_reason=c.finish_reason,
                logprobs=None
                if request.logprobs is None
                else _logprobs([*(echoed[i] if echoed else []), *(c.logprobs or [])]),
            )
            for i, result in enumerate(results)
            for j, c in enumerate(result.completions)
        ]
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=request.model,
            choices=choices,
            usage=_usage(results),
        ).model_dump(mode="json")

    async def _echoed(
        self, scorer: LogprobEngine, prompts: list[str | list[int]], request: CompletionRequest
    ) -> list[list[TokenLogprob]]:
        """The prompts' tokens with their log-probabilities (OpenAI's echo)."""
        try:
            return await scorer.prompt_logprobs(prompts, request.logprobs or 0)
        except EngineRejected as exc:
            raise OpenAIRequestError(400, str(exc), "prompt") from exc
        except EngineError as exc:
            raise OpenAIRequestError(503, f"engine: {exc}") from exc

    async def chat(self, body: dict[str, Any]) -> OpenAIResult:
        request = ChatCompletionRequest.model_validate(body)
        self._check_supported(request)
        prompt = self.engine.chat_prompt([{"role": m.role, "content": m.text()} for m in request.messages])
        if request.stream:
            return self._stream([prompt], request, "chat.completion.chunk")
        results = await self._run([prompt], request)
        choices = [
            ChatChoice(
                index=j, message=ChatChoiceMessage(content=c.text.strip()), finish_reason=c.finish_reason
            )
            for j, c in enumerate(results[0].completions)
        ]
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=request.model,
            choices=choices,
            usage=_usage(results),
        ).model_dump(mode="json")

    async def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """vLLM's /tokenize of a text prompt (count, tokens, token_strs) on a scoring engine."""
        if not self.engine.info.supports_logprobs or "prompt" not in body:
            raise self._refuse("prompt", "/tokenize of this request is not supported")
        request = TokenizeCompletionRequest.model_validate(body)
        scorer = cast(LogprobEngine, self.engine)
        tokens = scorer.tokenize(request.prompt, add_special_tokens=request.add_special_tokens is not False)
        reply: dict[str, Any] = {"count": len(tokens), "tokens": tokens}
        if request.return_token_strs:
            reply["token_strs"] = [scorer.detokenize([t]) for t in tokens]
        return reply

    async def detokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.engine.info.supports_logprobs:
            raise self._refuse("tokens", "/detokenize is not supported")
        request = DetokenizeRequest.model_validate(body)
        return {"prompt": cast(LogprobEngine, self.engine).detokenize(request.tokens)}

    # -- engine calls ----------------------------------------------------------------------------
    def _sampling(self, body: SamplingFields, seed: int | None) -> Sampling:
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        if isinstance(body, ChatCompletionRequest):
            stop += CHAT_STOP  # a base model continuing a transcript would write the user's turn too
            max_tokens = body.max_completion_tokens or body.max_tokens
        else:
            max_tokens = body.max_tokens
        return Sampling(
            logprobs=body.logprobs if isinstance(body, CompletionRequest) else None,
            n=body.n or 1,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=body.top_p or 1.0,
            top_k=-1 if body.top_k is None else body.top_k,
            max_tokens=max_tokens or 16,
            seed=seed,
            stop=stop,
        )

    async def _run(self, prompts: Sequence[str], body: SamplingFields) -> list[PromptResult]:
        seed = body.seed
        samplings = [
            self._sampling(
                body, None if seed is None else (seed if len(prompts) == 1 else derive_seed(seed, i))
            )
            for i in range(len(prompts))
        ]
        try:
            return await self.engine.generate(prompts, samplings)
        except EngineRejected as exc:
            raise OpenAIRequestError(400, str(exc)) from exc
        except EngineError as exc:
            raise OpenAIRequestError(503, f"engine: {exc}") from exc

    def _stream(self, prompts: Sequence[str], body: SamplingFields, kind: str) -> AsyncIterator[str]:
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
        if (body.n or 1) > 1 or len(prompts) > 1:
            raise self._refuse(
                "stream", "streaming more than one completion (n > 1 or several prompts) is not supported"
            )
        return self._events(prompts[0], body, kind)

    async def _events(self, prompt: str, body: SamplingFields, kind: str) -> AsyncIterator[str]:
        ident = f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        sampling = self._sampling(body, body.seed)

        options = body.stream_options
        include_usage = bool(options and options.include_usage)
        # vLLM's extension, as vLLM reads it: usage on every event, only with include_usage
        continuous = include_usage and bool(options and options.continuous_usage_stats)
        prompt_tokens = self.engine.count_tokens(prompt) if include_usage else 0
        produced = 0

        def event(choices: list[dict[str, Any]], final: bool = False) -> str:
            chunk: dict[str, Any] = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": body.model,
                "choices": choices,
            }
            if final or continuous:
                chunk["usage"] = CompletionUsage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=produced,
                    total_tokens=prompt_tokens + produced,
                ).model_dump()
            return f"data: {json.dumps(chunk)}\n\n"

        def choice(delta: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
            if kind == "text_completion":
                return {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
            message = (
                {"role": "assistant", "content": delta or ""}
                if first
                else ({"content": delta} if delta else {})
            )
            return {"index": 0, "delta": message, "finish_reason": finish, "logprobs": None}

        try:
            if kind != "text_completion":
                yield event([choice("", None, first=True)])
            finish: str | None = None
            async for delta in self.engine.stream(prompt, sampling):
                produced += delta.tokens
                finish = delta.finish_reason or finish
                if delta.text:
                    yield event([choice(delta.text, None)])
            yield event([choice(None, finish or "stop")])
            if include_usage:
                yield event([], final=True)
            yield "data: [DONE]\n\n"
        except (EngineError, EngineRejected) as exc:
            yield "data: " + json.dumps({"error": {"message": str(exc), "type": "upstream_error"}}) + "\n\n"


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """A completion request's prompts: a text, texts, one token-id list or several."""
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(p, int) for p in prompt):
        return [cast(list[int], prompt)]
    return [p if isinstance(p, str) else list(cast(list[int], p)) for p in prompt]


def _logprobs(entries: Sequence[TokenLogprob]) -> CompletionLogprobs:
    """Tokens with their log-probabilities in OpenAI's completion shape, offsets into the text."""
    offsets, at = [], 0
    for entry in entries:
        offsets.append(at)
        at += len(entry.token)
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[e.top for e in entries],
        text_offset=offsets,
    )


def _usage(results: Sequence[PromptResult]) -> CompletionUsage:
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(c.tokens for r in results for c in r.completions)
    return CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
