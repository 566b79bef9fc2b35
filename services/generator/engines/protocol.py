"""The engine interface every backend implements, its value types and errors, and the helpers the
service layers share (per-prompt seeds, engine errors as API errors).

The backends live beside this module and import it; it imports none of them (the factory that picks
one by configuration is `engines.factory`).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from services.generator.field_format import FieldFormat
from services.generator.model_store import ResolvedModel
from shared.errors import GoldError, InvalidInput, UpstreamError

T = TypeVar("T")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one prompt; `n` completions share the prompt (and its KV cache)."""

    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    max_tokens: int = 96
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Guided decoding: the completion must be in this format (engines with supports_structured).
    field_format: FieldFormat | None = None
    # With each completion token, its log-probability and this many most likely alternatives
    # (engines with supports_logprobs; OpenAI's `logprobs`).
    logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A token of a prompt or completion: its text, its log-probability given what precedes it (None
    for a prompt's first token) and the most likely tokens there, the token itself among them."""

    token: str
    logprob: float | None
    top: dict[str, float] | None


@dataclass
class Completion:
    text: str
    tokens: int
    finish_reason: str | None  # "stop" | "length" | None
    logprobs: list[TokenLogprob] | None = None  # when the Sampling asked for them


@dataclass
class PromptResult:
    prompt_tokens: int
    completions: list[Completion] = field(default_factory=list)


@dataclass
class Delta:
    """A piece of a streamed completion."""

    text: str
    tokens: int
    finish_reason: str | None = None


@dataclass(frozen=True)
class EngineInfo:
    engine: str
    engine_version: str | None
    model: ResolvedModel
    supports_structured: bool = False
    supports_logprobs: bool = False  # a LogprobEngine: OpenAI's logprobs and echo on the basic layer
    parameters: int | None = None  # the model's parameter count, for cost comparisons


class EngineError(RuntimeError):
    """The engine failed or timed out on a call."""


class EngineRejected(ValueError):
    """The engine refused the request's settings or prompt (a client error: 422)."""


class OpenAIRequestError(GoldError):
    """A request an OpenAI server refused, in OpenAI's terms: status, message, type and the
    parameter at fault (rendered as {"error": {"message", "type", "param", "code"}})."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str | None = None):
        super().__init__(message)
        self.status_code = status
        self.error = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.param = param


OpenAIResult = dict[str, Any] | AsyncIterator[str]


class OpenAIServer(Protocol):
    """OpenAI's API on an engine: bodies in OpenAI's names in, a response body or server-sent
    events (`data: {...}`) out; refusals raise OpenAIRequestError. Auth, limits and metrics are
    the caller's (services/generator/openai_compat.py)."""

    async def completions(self, body: dict[str, Any]) -> OpenAIResult: ...

    async def chat(self, body: dict[str, Any]) -> OpenAIResult: ...

    async def tokenize(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def detokenize(self, body: dict[str, Any]) -> dict[str, Any]: ...


@runtime_checkable
class TextEngine(Protocol):
    info: EngineInfo

    async def start(self) -> None:
        """Load the model; raise ModelError if it cannot be served safely."""

    async def close(self) -> None: ...

    def ready(self) -> bool: ...

    async def generate(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[PromptResult]:
        """All prompts at once (one Sampling each); results in prompt order."""
        ...

    def stream(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        """Pieces of one completion (n must be 1) as the engine produces them."""
        ...

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """The model's own chat template applied to messages (a plain transcript without one)."""
        ...

    async def score_continuations(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[float]]:
        """log P(continuation | prompt) for every prompt x continuation pair."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def openai_server(self) -> OpenAIServer | None:
        """The engine's own OpenAI serving code (vLLM's), or None: the generator's basic layer
        (services/generator/basic_openai.py) serves OpenAI's API through `generate`/`stream`."""
        ...


# Who a request serves: a person or program waiting on it (another team's completion: the
# default) or the loop's bulk work, which its client marks with the header PRIORITY_HEADER
# ("batch"). Set per request by the routes' access dependency (deps.py), read where engines queue
# calls; asyncio.to_thread carries it into the worker thread.
Priority = Literal["interactive", "batch"]
request_priority: ContextVar[Priority] = ContextVar("request_priority", default="interactive")


class PriorityLock:
    """One holder at a time, like threading.Lock; when it is released the waiting interactive
    call goes before any waiting batch call (first come, first served within each)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held = False
        self._waiting: list[tuple[int, int]] = []  # a heap of (rank, ticket)
        self._tickets = itertools.count()

    @contextmanager
    def hold(self, priority: Priority = "interactive") -> Iterator[None]:
        turn = (1 if priority == "batch" else 0, next(self._tickets))
        with self._changed:
            heapq.heappush(self._waiting, turn)
            while self._held or self._waiting[0] != turn:
                self._changed.wait()
            heapq.heappop(self._waiting)
            self._held = True
        try:
            yield
        finally:
            with self._changed:
                self._held = False
                self._changed.notify_all()


async def call_in_thread(lock: PriorityLock, timeout_s: float, fn: Callable[..., T], *args: Any) -> T:
    """A blocking engine call in a worker thread, one at a time (`lock`, interactive calls first),
    bounded by `timeout_s`: for engines that are one in-process model (llama.cpp, transformers).
    The thread cannot be stopped; the lock keeps a timed-out call from overlapping the next."""
    priority = request_priority.get()

    def locked() -> T:
        with lock.hold(priority):
            return fn(*args)

    try:
        return await asyncio.wait_for(asyncio.to_thread(locked), timeout_s)
    except TimeoutError as exc:
        raise EngineError(f"engine call timed out after {timeout_s:g} s") from exc


async def one_piece(engine: TextEngine, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
    """`stream` for engines that decode whole completions in one call: the completion as one piece."""
    (result,) = await engine.generate([prompt], [sampling])
    completion = result.completions[0]
    yield Delta(completion.text, completion.tokens, completion.finish_reason)


class LogprobEngine(TextEngine, Protocol):
    """An engine that scores prompts token by token (OpenAI's `echo` with `logprobs`, what
    lm-evaluation-harness's local-completions asks for), served by the basic layer."""

    async def prompt_logprobs(
        self, prompts: Sequence[str | Sequence[int]], top: int
    ) -> list[list[TokenLogprob]]:
        """Each prompt's tokens (text, or token ids as given) with their log-probabilities."""
        ...

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def detokenize(self, token_ids: Sequence[int]) -> str: ...


def check_context(prompt_tokens: int, max_tokens: int, limit: int) -> None:
    """A prompt and the tokens asked of it must fit the model's context (a client error)."""
    if prompt_tokens + max_tokens > limit:
        raise EngineRejected(
            f"a prompt of {prompt_tokens} tokens plus max_tokens={max_tokens} is over the model's "
            f"context of {limit} tokens: shorten the prompt or lower max_tokens"
        )


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Where the earliest stop string starts in text, or -1."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else -1


def derive_seed(base: int, *parts: object) -> int:
    """A stable per-prompt seed: the same request seed gives the same samples, and no two prompts
    of a request share a seed (vLLM seeds per request: equal seeds give identical samples)."""
    digest = hashlib.sha256(repr((base, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@contextmanager
def engine_errors(field: str) -> Iterator[None]:
    """Engine failures as API errors: a request the engine rejects is a 422 naming `field`, any
    other engine error a 503."""
    try:
        yield
    except EngineRejected as exc:
        raise InvalidInput(field, str(exc)) from exc
    except EngineError as exc:
        raise UpstreamError("engine", str(exc), 503) from exc
