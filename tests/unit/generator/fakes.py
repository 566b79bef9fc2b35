"""A scripted engine for tests of the serving logic (auth, limits, errors, parse statistics).
It never stands in for the real engine's own tests (tests/integration/generator)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence

from services.generator.engines.protocol import (
    Completion,
    Delta,
    EngineError,
    EngineInfo,
    PromptResult,
    Sampling,
)
from services.generator.model_store import ResolvedModel
from services.generator.prompts import chat_transcript

WORDS = (
    "river",
    "market",
    "violin",
    "harbour",
    "orchard",
    "glacier",
    "bakery",
    "comet",
    "lantern",
    "canyon",
    "tram",
    "meadow",
    "forge",
    "atlas",
    "ferry",
    "quarry",
)


def varied_text(prompt: str, sampling: Sampling, j: int) -> str:
    rng = random.Random(f"{sampling.seed}-{j}")
    words = " ".join(rng.choice(WORDS) for _ in range(8))
    return f" A story about the {words}, told plainly."


class FakeEngine:
    def __init__(
        self,
        script: Callable[[str, Sampling, int], str] = varied_text,
        fail: bool = False,
        delay_s: float = 0.0,
    ):
        self.info = EngineInfo(
            engine="fake",
            engine_version="0",
            model=ResolvedModel("default", "fake/model", "/nowhere", "r1"),
            parameters=1000,
        )
        self.script = script
        self.fail = fail
        self.delay_s = delay_s
        self.calls: list[tuple[list[str], list[Sampling]]] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    def ready(self) -> bool:
        return self.started

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def openai_server(self) -> None:
        return None  # served by the basic layer

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        return chat_transcript(messages)

    async def generate(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[PromptResult]:
        self.calls.append((list(prompts), list(sampling)))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise EngineError("scripted failure")
        return [
            PromptResult(
                prompt_tokens=self.count_tokens(p),
                completions=[
                    Completion(text, len(text.split()), "stop")
                    for text in (self.script(p, s, j) for j in range(s.n))
                ],
            )
            for p, s in zip(prompts, sampling, strict=True)
        ]

    async def stream(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        text = self.script(prompt, sampling, 0)
        words = text.split(" ")
        for i, word in enumerate(words):
            if self.fail and i == len(words) // 2:
                raise EngineError("scripted failure mid-stream")
            yield Delta(word + " ", 1)
            if self.delay_s:
                await asyncio.sleep(self.delay_s / len(words))
        yield Delta("", 0, "stop")

    async def score_continuations(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[float]]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise EngineError("scripted failure")
        # Scripted: the continuation named in the prompt's last line wins.
        return [[0.0 if c.strip() in p.splitlines()[-2] else -3.0 for c in continuations] for p in prompts]
