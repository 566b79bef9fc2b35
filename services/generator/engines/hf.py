"""transformers backend: the fallback where vLLM cannot be installed. One call at a time (a lock),
each prompt's n samples in one `generate` call, in a worker thread so the event loop stays free."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from services.generator.config import GeneratorSettings
from services.generator.engines.protocol import (
    Completion,
    Delta,
    EngineError,
    EngineInfo,
    PriorityLock,
    PromptResult,
    Sampling,
    call_in_thread,
    first_stop,
    one_piece,
)
from services.generator.model_store import ResolvedModel, check_bos, count_parameters
from services.generator.prompts import chat_transcript
from shared.hardware import resolve_dtype, usable_cores

logger = logging.getLogger(__name__)


class HFEngine:
    def __init__(self, settings: GeneratorSettings, model: ResolvedModel):
        import transformers

        self.settings = settings
        self.info = EngineInfo(
            engine="hf",
            engine_version=transformers.__version__,
            model=model,
            parameters=count_parameters(model.path),
        )
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        # torch's global RNG seeds each call: calls must not interleave.
        self._lock = PriorityLock()

    async def start(self) -> None:
        await asyncio.wait_for(asyncio.to_thread(self._load), self.settings.generator_start_timeout_s)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.info.model.path
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        check_bos(tokenizer, where=f"tokenizer of {self.info.model.name}", model_path=path)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        name = resolve_dtype(self.settings.generator_dtype, on_cuda=self._device == "cuda")
        if self._device == "cpu":
            torch.set_num_threads(self.settings.generator_threads or usable_cores())
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, name), trust_remote_code=False
        )
        # transformers wraps PreTrainedModel.to with functools.wraps, which its stubs do not bind to
        # the instance; the call is Module.to.
        cast(torch.nn.Module, model).to(self._device).eval()
        self._tokenizer, self._model = tokenizer, model

    async def close(self) -> None:
        self._model = None

    def ready(self) -> bool:
        return self._model is not None

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def openai_server(self) -> None:
        return None  # served by the basic layer

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            return self._tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        return chat_transcript(messages)

    def _encode(self, prompt: str) -> list[int]:
        bos = getattr(self._tokenizer, "bos_token", None)
        return self._tokenizer(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))["input_ids"]

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._model is None:
            raise EngineError("the transformers engine is not loaded")
        return await call_in_thread(self._lock, self.settings.generator_timeout_s, fn, *args)

    async def generate(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[PromptResult]:
        return await self._call(self._generate_sync, list(prompts), list(sampling))

    def _generate_sync(self, prompts: list[str], samplings: list[Sampling]) -> list[PromptResult]:
        import torch

        results = []
        with torch.inference_mode():
            for prompt, sampling in zip(prompts, samplings, strict=True):
                ids = torch.tensor([self._encode(prompt)], device=self._device)
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                sample = sampling.temperature > 0
                output = self._model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=sample,
                    temperature=sampling.temperature if sample else None,
                    top_k=sampling.top_k if sample and sampling.top_k > 0 else None,
                    top_p=sampling.top_p if sample else None,
                    max_new_tokens=sampling.max_tokens,
                    num_return_sequences=sampling.n,
                    stop_strings=list(sampling.stop) or None,
                    tokenizer=self._tokenizer,
                    pad_token_id=self._tokenizer.pad_token_id,
                )
                completions = []
                for row in output[:, ids.shape[1] :]:
                    tokens = [t for t in row.tolist() if t != self._tokenizer.pad_token_id]
                    text = self._tokenizer.decode(tokens, skip_special_tokens=True)
                    completions.append(self._finish(text, tokens, sampling))
                results.append(PromptResult(prompt_tokens=ids.shape[1], completions=completions))
        return results

    def _finish(self, text: str, tokens: list[int], sampling: Sampling) -> Completion:
        cut = first_stop(text, sampling.stop)
        if cut >= 0:
            return Completion(text=text[:cut], tokens=len(tokens), finish_reason="stop")
        ended = bool(tokens) and tokens[-1] == self._tokenizer.eos_token_id
        reason = "length" if len(tokens) >= sampling.max_tokens and not ended else "stop"
        return Completion(text=text, tokens=len(tokens), finish_reason=reason)

    def stream(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        return one_piece(self, prompt, sampling)  # generate() has no cheap incremental path here

    async def score_continuations(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[float]]:
        return await self._call(self._score_sync, list(prompts), list(continuations))

    def _score_sync(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        import torch

        conts = [self._tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        out: list[list[float]] = []
        with torch.inference_mode():
            for prompt in prompts:
                ids = self._encode(prompt)
                # The prompt once (its KV cache), then every continuation on a copy of it.
                first = self._model(input_ids=torch.tensor([ids], device=self._device), use_cache=True)
                start = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
                row = []
                for cont in conts:
                    total = float(start[cont[0]])
                    if len(cont) > 1:
                        cache = _copy_cache(first.past_key_values)
                        rest = self._model(
                            input_ids=torch.tensor([cont[:-1]], device=self._device), past_key_values=cache
                        )
                        logprobs = torch.log_softmax(rest.logits[0].float(), dim=-1)
                        total += float(sum(logprobs[k, t] for k, t in enumerate(cont[1:])))
                    row.append(total)
                out.append(row)
        return out


def _copy_cache(cache: Any) -> Any:
    import copy

    return copy.deepcopy(cache)
