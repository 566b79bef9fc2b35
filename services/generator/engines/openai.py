"""Remote backend: an OpenAI-compatible server (e.g. a fleet of `vllm serve` behind a load
balancer), the scale-out path when one machine is not enough. GOLD's calls go out concurrently
through the openai client (the server batches them); the OpenAI routes pass through to the server
as they are (engines/upstream_openai.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from services.generator.config import GeneratorSettings
from services.generator.engines.protocol import (
    Completion,
    Delta,
    EngineError,
    EngineInfo,
    PromptResult,
    Sampling,
)
from services.generator.engines.upstream_openai import UpstreamOpenAIServer
from services.generator.model_store import ModelError, ResolvedModel
from services.generator.prompts import chat_transcript

logger = logging.getLogger(__name__)


class OpenAIEngine:
    """`model.path` is the server's base URL, `model.model_id` the model's name there."""

    def __init__(self, settings: GeneratorSettings, model: ResolvedModel, http_client: Any = None):
        import openai

        if not model.path:
            raise ModelError(
                f"the openai engine of {model.name!r} needs a base URL: GOLD_GENERATOR_OPENAI_BASE_URL, "
                "or an openai:<base URL> source in GOLD_GENERATOR_MODELS"
            )
        self.settings = settings
        self.info = EngineInfo(engine="openai", engine_version=openai.__version__, model=model)
        self._http_client = http_client  # tests pass an in-process transport
        self._client: Any = None
        self._server: UpstreamOpenAIServer | None = None
        self._ready = False

    async def start(self) -> None:
        from openai import AsyncOpenAI

        key = self.settings.generator_openai_api_key
        api_key = key.get_secret_value() if key else "unused"
        self._client = AsyncOpenAI(
            base_url=self.info.model.path,
            api_key=api_key,
            timeout=self.settings.generator_timeout_s,
            max_retries=2,
            http_client=self._http_client,
        )
        self._server = UpstreamOpenAIServer(
            self.info.model.path,
            self.info.model.model_id,
            api_key,
            self.settings.generator_timeout_s,
            client=self._http_client,
        )
        try:
            models = await self._client.models.list()
        except Exception as exc:
            raise ModelError(f"cannot list models at {self.info.model.path}: {exc}") from exc
        names = [m.id for m in models.data]
        if self.info.model.model_id not in names:
            raise ModelError(f"the server does not serve {self.info.model.model_id!r} (it serves {names})")
        self._ready = True

    async def close(self) -> None:
        self._ready = False
        if self._client is not None:
            await self._client.close()
        if self._server is not None:
            await self._server.close()

    def ready(self) -> bool:
        return self._ready

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)  # no tokenizer here: an estimate for limits only

    def openai_server(self) -> UpstreamOpenAIServer | None:
        return self._server

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        return chat_transcript(messages)

    def _args(self, sampling: Sampling) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self.info.model.model_id,
            "n": sampling.n,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            args["seed"] = sampling.seed
        if sampling.stop:
            args["stop"] = list(sampling.stop)[:4]  # OpenAI's limit
        if sampling.top_k > 0:
            args["extra_body"] = {"top_k": sampling.top_k}  # vLLM's extension
        return args

    async def _one(self, prompt: str, sampling: Sampling) -> PromptResult:
        response = await self._client.completions.create(prompt=prompt, **self._args(sampling))
        usage = response.usage
        per_choice = (usage.completion_tokens // max(len(response.choices), 1)) if usage else 0
        choices = sorted(response.choices, key=lambda c: c.index)
        return PromptResult(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completions=[Completion(c.text, per_choice, c.finish_reason) for c in choices],
        )

    async def generate(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[PromptResult]:
        if self._client is None:
            raise EngineError("the openai engine is not started")
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(self._one(p, s) for p, s in zip(prompts, sampling, strict=True))),
                self.settings.generator_timeout_s,
            )
        except TimeoutError as exc:
            raise EngineError(
                f"remote engine timed out after {self.settings.generator_timeout_s:g} s"
            ) from exc
        except Exception as exc:  # the client's errors (connection, 4xx/5xx) name the cause
            raise EngineError(f"remote engine failed: {type(exc).__name__}: {exc}") from exc

    async def stream(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        try:
            stream = await self._client.completions.create(prompt=prompt, stream=True, **self._args(sampling))
            async for chunk in stream:
                for choice in chunk.choices:
                    yield Delta(choice.text, 1 if choice.text else 0, choice.finish_reason)
        except Exception as exc:
            raise EngineError(f"remote engine failed: {type(exc).__name__}: {exc}") from exc

    async def score_continuations(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[float]]:
        """Prompt logprobs through `echo` (vLLM's server supports it; OpenAI's own API does not)."""

        async def score(prompt: str, continuation: str) -> float:
            response = await self._client.completions.create(
                model=self.info.model.model_id,
                prompt=prompt + continuation,
                max_tokens=1,
                echo=True,
                logprobs=0,
                temperature=0.0,
            )
            logprobs = response.choices[0].logprobs
            if logprobs is None or logprobs.text_offset is None:
                raise EngineError("the remote server returned no prompt logprobs (echo); use the vllm engine")
            return sum(
                lp or 0.0
                for offset, lp in zip(logprobs.text_offset, logprobs.token_logprobs, strict=False)
                if len(prompt) <= offset < len(prompt) + len(continuation)
            )

        try:
            rows = await asyncio.wait_for(
                asyncio.gather(*(asyncio.gather(*(score(p, c) for c in continuations)) for p in prompts)),
                self.settings.generator_timeout_s,
            )
        except TimeoutError as exc:
            raise EngineError("remote engine timed out") from exc
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"remote engine failed: {type(exc).__name__}: {exc}") from exc
        return [list(row) for row in rows]
