"""Per-key request/token limits over a sliding minute, caps and scopes."""

from __future__ import annotations

import pytest

from services.generator.config import GeneratorSettings, KeyPolicy
from services.generator.limits import KeyLimiter
from shared.errors import Forbidden, InvalidInput, RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(**overrides: object) -> tuple[KeyLimiter, Clock]:
    settings = GeneratorSettings(
        generator_requests_per_minute=3,
        generator_tokens_per_minute=1000,
        generator_key_policies={
            "big": KeyPolicy(requests_per_minute=100, tokens_per_minute=10_000, max_n=1000),
            "reader": KeyPolicy(scopes=["classify"]),
        },
        **overrides,
    )
    clock = Clock()
    return KeyLimiter(settings, clock), clock


def test_requests_per_minute_and_retry_after() -> None:
    lim, clock = limiter()
    for _ in range(3):
        lim.reserve("team", 10)
    with pytest.raises(RateLimited) as err:
        lim.reserve("team", 10)
    assert err.value.headers == {"Retry-After": "60"} and "3 requests per minute" in err.value.message
    lim.reserve("big", 10)  # another key has its own budget
    clock.now += 60.5
    lim.reserve("team", 10)  # the window slid on


def test_tokens_per_minute_with_settlement() -> None:
    lim, clock = limiter()
    reserved = lim.reserve("team", 900)
    with pytest.raises(RateLimited, match="token limit"):
        lim.reserve("team", 200)
    lim.settle("team", reserved, 100)  # the request used far less than its upper bound
    lim.reserve("team", 200)
    with pytest.raises(InvalidInput, match="lower n or max_tokens"):
        lim.reserve("team", 5000)  # could never fit: not a 429 but a request to change


def test_caps_and_scopes() -> None:
    lim, _ = limiter(generator_max_n=64, generator_max_tokens=256)
    lim.check_caps("team", 64, 256)
    with pytest.raises(InvalidInput) as err:
        lim.check_caps("team", 65, 10)
    assert err.value.detail[0]["loc"] == ["n"]
    with pytest.raises(InvalidInput) as err:
        lim.check_caps("team", 1, 257, tokens_field="sampling.max_tokens")
    assert err.value.detail[0]["loc"] == ["sampling", "max_tokens"]
    lim.check_caps("big", 1000, 10)
    lim.check_scope("team", "generate")
    lim.check_scope("reader", "classify")
    with pytest.raises(Forbidden, match="GOLD_GENERATOR_KEY_POLICIES"):
        lim.check_scope("reader", "generate")
