"""llama.cpp backend: the model's GGUF loaded as it ships (no conversion), in the generator process.

The fast engine on CPU-only hosts (engines/choice.py, docs/results/cpu-engines.json): quantized matmuls with
the CPU's own vector extensions, every prompt of a call decoded together (engines/llamacpp_decode.py),
the few-shot prefix that the prompts of a call share computed once. Calls run one at a time (one
context; a lock), each in a worker thread so the event loop stays free. OpenAI's API is served by
the generator's basic layer; log-probabilities of continuations (classification) by
`score_continuations`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from services.generator.config import GeneratorSettings
from services.generator.engines.protocol import (
    Delta,
    EngineError,
    EngineInfo,
    EngineRejected,
    PriorityLock,
    PromptResult,
    Sampling,
    TokenLogprob,
    call_in_thread,
    check_context,
    derive_seed,
    one_piece,
    request_priority,
)
from services.generator.model_store import ModelError, ResolvedModel
from services.generator.prompts import chat_transcript
from shared.hardware import usable_cores

logger = logging.getLogger(__name__)

# KV cells are f16 keys and values: 2 x 2 bytes per layer and key/value dimension.
_KV_BYTES_PER_ELEMENT = 4


class LlamaCppEngine:
    def __init__(self, settings: GeneratorSettings, model: ResolvedModel):
        import llama_cpp

        self.settings = settings
        self.info = EngineInfo(
            engine="llamacpp",
            engine_version=llama_cpp.__version__,
            model=model,
            supports_structured=True,  # a GBNF grammar in each completion's sampler chain
            supports_logprobs=True,
        )
        self._model: Any = None
        self._ctx: Any = None
        self._decoder: Any = None
        self._chat_template: str | None = None
        self._bos_text = ""
        self._lock = PriorityLock()  # one call at a time on the one context

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.wait_for(asyncio.to_thread(self._load), self.settings.generator_start_timeout_s)

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaContext, LlamaModel

        from services.generator.engines.llamacpp_decode import BatchDecoder

        path = self.info.model.path
        _route_llama_log()
        model = LlamaModel(path_model=path, params=llama_cpp.llama_model_default_params(), verbose=False)
        check_bos_gguf(model, where=f"GGUF of {self.info.model.name}")
        threads = self.settings.generator_threads or usable_cores()
        # One decode step holds every live sequence: at most one batch of them.
        max_seqs = min(
            self.settings.generator_llamacpp_max_seqs,
            llama_cpp.llama_max_parallel_sequences(),
            self.settings.generator_llamacpp_batch_tokens,
        )
        metadata = model.metadata()
        cells = kv_cells(
            metadata,
            self.settings.generator_kv_cache_gib,
            self.settings.generator_max_model_len,
            most=model.n_ctx_train(),
        )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = cells
        params.n_batch = params.n_ubatch = self.settings.generator_llamacpp_batch_tokens
        params.n_seq_max = max_seqs
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True  # sequences share cells: a copied prefix is stored once
        params.swa_full = True  # copied prefixes keep their sliding-window cells
        params.no_perf = True
        ctx = LlamaContext(model=model, params=params, verbose=False)
        self._decoder = BatchDecoder(model, ctx, params.n_batch, max_seqs, cells)
        self._model, self._ctx = model, ctx
        self._chat_template = metadata.get("tokenizer.chat_template")
        self._bos_text = self._decoder.piece(model.token_bos(), special=True).decode(errors="ignore")
        self.info = dataclasses.replace(self.info, parameters=model.n_params())
        logger.info(
            "llama.cpp %s: %s, %d threads, %d KV cells, %d sequences at once",
            llama_cpp.__version__,
            model.desc(),
            threads,
            cells,
            max_seqs,
        )

    async def close(self) -> None:
        with self._lock.hold():
            if self._decoder is not None:
                self._decoder.close()
            self._decoder = None
            if self._ctx is not None:
                self._ctx.close()
            if self._model is not None:
                self._model.close()
            self._ctx = self._model = None

    def ready(self) -> bool:
        return self._decoder is not None

    def openai_server(self) -> None:
        return None  # served by the basic layer

    # -- text ------------------------------------------------------------------------------------
    def _encode(self, text: str, add_bos: bool = True) -> list[int]:
        # A chat template writes BOS itself; everything else gets it where the GGUF asks for it.
        bos_text = self._bos_text
        bos = add_bos and self._model.add_bos_token() and not (bos_text and text.startswith(bos_text))
        return self._model.tokenize(text.encode(), add_bos=bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text, add_bos=False))

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if self._chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos = self._decoder.piece(self._model.token_eos(), special=True).decode(errors="ignore")
            formatter = Jinja2ChatFormatter(self._chat_template, eos_token=eos, bos_token=self._bos_text)
            return formatter(messages=list(messages)).prompt  # type: ignore[arg-type]
        return chat_transcript(messages)

    # -- calls -----------------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._decoder is None:
            raise EngineError("the llama.cpp engine is not loaded")
        return await call_in_thread(self._lock, self.settings.generator_timeout_s, self._loaded, fn, *args)

    def _loaded(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._decoder is None:
            raise EngineError("the llama.cpp engine was closed")
        return fn(*args)

    def _check_length(self, ids: list[int], max_tokens: int) -> None:
        check_context(len(ids), max_tokens, self.settings.generator_max_model_len)

    async def generate(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[PromptResult]:
        # A batch request (the loop's: 16 samples, GENERATE_CHUNK) is decoded whole unless asked: a
        # prompt at a time lets an interactive call go between its prompts, but made the loop's
        # generation 1.6-1.7x slower with no one else asking. Either way the priority lock lets a
        # waiting interactive call go before the next batch call.
        if self.settings.generator_batch_prompt_at_a_time and request_priority.get() == "batch":
            results: list[PromptResult] = []
            for prompt, s in zip(prompts, sampling, strict=True):
                results += await self._call(self._generate_sync, [prompt], [s])
            return results
        return await self._call(self._generate_sync, list(prompts), list(sampling))

    def _generate_sync(self, prompts: list[str], samplings: list[Sampling]) -> list[PromptResult]:
        ids = [self._encode(p) for p in prompts]
        for tokens, s in zip(ids, samplings, strict=True):
            self._check_length(tokens, s.max_tokens)
        # A prompt's n completions are decoded together, up to the engine's sequences at once:
        # more are split into parts that keep their sample indices (and so their seeds).
        parts: list[tuple[int, int]] = []  # (prompt, first sample index)
        part_ids, part_sampling, part_seeds = [], [], []
        for i, (tokens, s) in enumerate(zip(ids, samplings, strict=True)):
            seed = s.seed if s.seed is not None else random.getrandbits(31)
            for first in range(0, s.n, self._decoder.max_seqs):
                parts.append((i, first))
                part_ids.append(tokens)
                part_sampling.append(dataclasses.replace(s, n=min(self._decoder.max_seqs, s.n - first)))
                part_seeds.append(derive_seed(seed, first) if first else seed)
        results = self._decoder.generate(part_ids, part_sampling, part_seeds)
        merged = [PromptResult(prompt_tokens=len(tokens)) for tokens in ids]
        for (i, _), result in zip(parts, results, strict=True):
            merged[i].completions += result.completions
        return merged

    def stream(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        return one_piece(self, prompt, sampling)  # a call decodes whole completions

    async def score_continuations(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[float]]:
        return await self._call(self._score_sync, list(prompts), list(continuations))

    async def prompt_logprobs(
        self, prompts: Sequence[str | Sequence[int]], top: int
    ) -> list[list[TokenLogprob]]:
        return await self._call(self._prompt_logprobs_sync, list(prompts), top)

    def _prompt_logprobs_sync(self, prompts: list[str | Sequence[int]], top: int) -> list[list[TokenLogprob]]:
        ids = [self._encode(p) if isinstance(p, str) else list(p) for p in prompts]
        for tokens in ids:
            self._check_length(tokens, 0)
            if any(not 0 <= t < self._decoder.n_vocab for t in tokens):
                raise EngineRejected(
                    f"a prompt token id is outside the vocabulary (0-{self._decoder.n_vocab - 1})"
                )
        return self._decoder.prompt_logprobs(ids, top)

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._encode(text, add_bos=add_special_tokens)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return b"".join(self._decoder.piece(t, special=True) for t in token_ids).decode(errors="replace")

    def _score_sync(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        ids = [self._encode(p) for p in prompts]
        conts = [self._encode(c, add_bos=False) for c in continuations]
        if any(not c for c in conts):
            raise EngineError("a continuation encodes to no tokens")
        for tokens in ids:
            self._check_length(tokens, max(len(c) for c in conts))
        return self._decoder.score(ids, conts)


def kv_cells(metadata: dict[str, str], gib: float, max_model_len: int, most: int) -> int:
    """KV cells that fit in `gib` for this model (from its GGUF metadata), at most `most` (the
    model's training context) and at least one full context; a multiple of 256 as llama.cpp pads."""
    arch = metadata.get("general.architecture", "")
    try:
        layers = int(metadata[f"{arch}.block_count"])
        heads_kv = int(
            metadata.get(f"{arch}.attention.head_count_kv") or metadata[f"{arch}.attention.head_count"]
        )
        key = int(metadata.get(f"{arch}.attention.key_length") or 0)
        value = int(metadata.get(f"{arch}.attention.value_length") or 0)
        if not key or not value:
            key = value = int(metadata[f"{arch}.embedding_length"]) // int(
                metadata[f"{arch}.attention.head_count"]
            )
    except (KeyError, ValueError):
        return max(max_model_len, min(16384, most))
    per_cell = layers * heads_kv * (key + value) * _KV_BYTES_PER_ELEMENT // 2
    cells = int(gib * 2**30 // per_cell)
    return max(max_model_len, min(cells, most)) // 256 * 256


def check_bos_gguf(model: Any, where: str) -> None:
    """Refuse a GGUF whose tokenizer asks for BOS but does not write it (the trap that makes Gemma
    copy its last example; model_store.check_bos is the same guard for Hugging Face folders)."""
    if not model.add_bos_token():
        return  # a model trained without BOS (SmolLM2, Qwen): nothing to check
    ids = model.tokenize(b"Review: a quiet film.", add_bos=True, special=True)
    if not ids or ids[0] != model.token_bos():
        raise ModelError(f"{where} asks for BOS but its tokenizer does not add it (first ids {ids[:2]})")


_LLAMA_LOG: Any = None  # the ctypes callback, kept alive while llama.cpp may call it


def _route_llama_log() -> None:
    """llama.cpp's own log (several dozen lines per context) into this logger: warnings and errors."""
    global _LLAMA_LOG
    if _LLAMA_LOG is not None:
        return
    import ctypes

    import llama_cpp

    def forward(level: int, text: bytes, _: ctypes.c_void_p) -> None:
        if level in (3, 4):  # ggml_log_level: GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
            logger.log(
                logging.WARNING if level == 3 else logging.ERROR,
                "llama.cpp: %s",
                text.decode(errors="replace").rstrip(),
            )

    _LLAMA_LOG = llama_cpp.llama_log_callback(forward)
    llama_cpp.llama_log_set(_LLAMA_LOG, ctypes.c_void_p(0))
