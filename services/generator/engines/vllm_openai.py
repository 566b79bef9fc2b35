"""vLLM's own OpenAI serving code (completions, chat completions, tokenize, detokenize) driven on
the generator's AsyncLLM: the same classes `vllm serve` runs, so logprobs, echo, penalties,
structured output (response_format), content parts and usage in streams behave as on vLLM's own
server. The generator's auth, limits and metrics stay in front (services/generator/openai_compat.py).

A model without a chat template (the default teacher is a base model) is served chat as the same
plain transcript the other engines use (prompts.TRANSCRIPT_TEMPLATE), stopped at the next turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from services.generator.engines.protocol import OpenAIRequestError, OpenAIResult
from services.generator.prompts import CHAT_STOP, TRANSCRIPT_TEMPLATE

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class VLLMOpenAIServer:
    def __init__(self, llm: Any, served_names: Sequence[str], *, has_chat_template: bool, timeout_s: float):
        from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
        from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion
        from vllm.entrypoints.openai.models.protocol import BaseModelPath
        from vllm.entrypoints.openai.models.serving import OpenAIServingModels
        from vllm.entrypoints.serve.tokenize.serving import ServingTokenization
        from vllm.renderers.online_renderer import OnlineRenderer

        path = llm.model_config.model
        models = OpenAIServingModels(
            llm, [BaseModelPath(name=name, model_path=path) for name in served_names]
        )
        template = None if has_chat_template else TRANSCRIPT_TEMPLATE
        # The transcript reads content as one string; a model's own template decides for itself.
        content_format: Literal["auto", "string"] = "auto" if has_chat_template else "string"
        renderer = OnlineRenderer(
            llm.model_config,
            llm.renderer,
            request_logger=None,
            chat_template=template,
            chat_template_content_format=content_format,
        )
        self._chat_stop: tuple[str, ...] = () if has_chat_template else CHAT_STOP
        self._timeout_s = timeout_s
        self._completion = OpenAIServingCompletion(llm, models, online_renderer=renderer, request_logger=None)
        self._chat = OpenAIServingChat(
            llm,
            models,
            "assistant",
            online_renderer=renderer,
            request_logger=None,
            chat_template=template,
            chat_template_content_format=content_format,
        )
        self._tokens = ServingTokenization(
            models, renderer, chat_template=template, chat_template_content_format=content_format
        )

    async def completions(self, body: dict[str, Any]) -> OpenAIResult:
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest

        request = _parse(CompletionRequest, body)
        return await self._call(self._completion.create_completion(request, None))

    async def chat(self, body: dict[str, Any]) -> OpenAIResult:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        if self._chat_stop:  # a base model continuing a transcript would write the user's turn too
            stop = body.get("stop") or []
            body = {**body, "stop": [*([stop] if isinstance(stop, str) else stop), *self._chat_stop]}
        request = _parse(ChatCompletionRequest, body)
        return await self._call(self._chat.create_chat_completion(request, None))

    async def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        from vllm.entrypoints.serve.tokenize.protocol import TokenizeChatRequest, TokenizeCompletionRequest

        request: TokenizeChatRequest | TokenizeCompletionRequest = (
            _parse(TokenizeChatRequest, body)
            if "messages" in body
            else _parse(TokenizeCompletionRequest, body)
        )
        # vLLM annotates raw_request as a Request but reads it only when it is not None.
        call = self._tokens.create_tokenize(request, None)  # type: ignore[arg-type]  # vLLM takes None
        result = await self._call(call)
        assert isinstance(result, dict)
        return result

    async def detokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        from vllm.entrypoints.serve.tokenize.protocol import DetokenizeRequest

        # vLLM annotates raw_request as a Request but reads it only when it is not None.
        request = _parse(DetokenizeRequest, body)
        call = self._tokens.create_detokenize(request, None)  # type: ignore[arg-type]  # vLLM takes None
        result = await self._call(call)
        assert isinstance(result, dict)
        return result

    async def _call(self, call: Any) -> OpenAIResult:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.exceptions import VLLMClientError

        try:
            # A stream comes back at once as a generator; this bounds the rest.
            result = await asyncio.wait_for(call, self._timeout_s)
        except TimeoutError as exc:
            raise OpenAIRequestError(503, f"engine call timed out after {self._timeout_s:g} s") from exc
        except (VLLMClientError, ValueError) as exc:
            raise OpenAIRequestError(400, str(exc)) from exc
        except Exception as exc:  # the engine died or failed: a 503, never a 500
            logger.exception("vLLM's OpenAI serving failed")
            raise OpenAIRequestError(503, f"engine: {type(exc).__name__}: {exc}") from exc
        if isinstance(result, ErrorResponse):
            error = result.error
            raise OpenAIRequestError(error.code, error.message, error.param, error.type)
        if isinstance(result, BaseModel):
            return result.model_dump(mode="json")
        return result  # server-sent events


def _parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(p) for p in error["loc"]) or None
        raise OpenAIRequestError(400, f"{param}: {error['msg']}", param) from exc
