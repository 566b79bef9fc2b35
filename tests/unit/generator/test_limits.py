"""Per-key request/token limits, kept in this process or in a real Redis (which replicas share),
their settlement, caps and scopes."""

from __future__ import annotations

import asyncio

import pytest

from services.generator.config import GeneratorSettings, KeyPolicy
from services.generator.limits import KeyLimiter
from shared.errors import Forbidden, InvalidInput, NotReady, RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 6000.0  # the start of a minute

    def __call__(self) -> float:
        return self.now


def make(
    redis_url: str | None, clock: Clock | None = None, window_s: int = 60, **overrides: object
) -> KeyLimiter:
    values: dict[str, object] = {
        "redis_url": redis_url,
        "generator_requests_per_minute": 3,
        "generator_tokens_per_minute": 1000,
        "generator_key_policies": {
            "big": KeyPolicy(requests_per_minute=100, tokens_per_minute=10_000, max_n=1000),
            "reader": KeyPolicy(scopes=["classify"]),
        },
    }
    settings = GeneratorSettings(**{**values, **overrides})  # type: ignore[arg-type]
    if clock is None:
        return KeyLimiter(settings, window_s=window_s)
    return KeyLimiter(settings, window_s=window_s, clock=clock)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> str | None:
    """The quota store's URL: none (this process) or the embedded Redis."""
    return None if request.param == "memory" else request.getfixturevalue("redis_url")


@pytest.mark.anyio
async def test_requests_per_minute_and_retry_after(store: str | None) -> None:
    lim = make(store)
    for _ in range(3):
        await lim.reserve("team", 10)
    with pytest.raises(RateLimited) as err:
        await lim.reserve("team", 10)
    assert 1 <= int(err.value.headers["Retry-After"]) <= 60
    assert "3 requests per minute" in err.value.message
    assert await lim.tokens_used("team") == 30  # the refused request holds no tokens
    await lim.reserve("big", 10)  # another key has its own budget
    await lim.aclose()


@pytest.mark.anyio
async def test_the_request_window_moves_on(store: str | None) -> None:
    lim = make(store, window_s=1)
    for _ in range(3):
        await lim.reserve("team", 1)
    with pytest.raises(RateLimited):
        await lim.reserve("team", 1)
    await asyncio.sleep(1.05)
    await lim.reserve("team", 1)
    await lim.aclose()


@pytest.mark.anyio
async def test_tokens_per_minute_with_settlement(store: str | None) -> None:
    lim = make(store)
    held = await lim.reserve("team", 900)
    with pytest.raises(RateLimited, match="token limit") as err:
        await lim.reserve("team", 200)
    assert err.value.headers is not None and 1 <= int(err.value.headers["Retry-After"]) <= 60
    assert await lim.tokens_used("team") == 900  # the refused reservation took nothing
    held.used = 100  # the request used far less than its upper bound
    await lim.settle(held)
    await lim.settle(held)  # once only
    assert await lim.tokens_used("team") == 100
    await lim.reserve("team", 200)
    with pytest.raises(InvalidInput, match="lower n or max_tokens"):
        await lim.reserve("team", 5000)  # could never fit: not a 429 but a request to change
    await lim.aclose()


@pytest.mark.anyio
async def test_a_settlement_lands_in_the_right_minute(store: str | None) -> None:
    clock = Clock()
    lim = make(store, clock)
    over = await lim.reserve("team", 500)
    over.used = 700  # long prompts: more than the reservation
    under = await lim.reserve("team", 300)
    under.used = 0
    clock.now += 60
    await lim.settle(over)
    await lim.settle(under)
    # The overrun counts in the minute it is learnt; the refund had nothing left to return to.
    assert await lim.tokens_used("team") == 200
    clock.now -= 60
    assert await lim.tokens_used("team") == 800
    await lim.aclose()


@pytest.mark.anyio
async def test_two_replicas_share_one_budget_in_redis(redis_url: str) -> None:
    first, second = make(redis_url), make(redis_url)  # each with its own connections, as two processes
    held = await first.reserve("team", 900)
    with pytest.raises(RateLimited, match="token limit"):
        await second.reserve("team", 200)  # the first's reservation, still in flight, counts here
    held.used = 100
    await first.settle(held)
    await second.reserve("team", 200)
    assert await second.tokens_used("team") == await first.tokens_used("team") == 300
    await first.reserve("team", 1)  # the third request of the minute, over both replicas
    with pytest.raises(RateLimited, match="3 requests per minute"):
        await second.reserve("team", 1)
    await first.aclose()
    await second.aclose()


@pytest.mark.anyio
async def test_without_redis_each_process_counts_alone() -> None:
    first, second = make(None), make(None)
    await first.reserve("team", 900)
    await second.reserve("team", 900)
    assert await second.tokens_used("team") == 900


@pytest.mark.anyio
async def test_a_request_quota_settles_however_the_request_ends(store: str | None) -> None:
    lim = make(store, generator_requests_per_minute=100)
    async with lim.quota("team") as quota:
        held = await quota.reserve(500)
        held.used = 50
    assert await lim.tokens_used("team") == 50

    with pytest.raises(RuntimeError):
        async with lim.quota("team") as quota:
            await quota.reserve(500)
            raise RuntimeError("the engine failed")
    assert await lim.tokens_used("team") == 50  # released

    reserved = asyncio.Event()

    async def request() -> None:
        async with lim.quota("team") as quota:
            await quota.reserve(500)
            reserved.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(request())
    await reserved.wait()
    assert await lim.tokens_used("team") == 550
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await lim.tokens_used("team") == 50  # released on cancellation too
    await lim.aclose()


@pytest.mark.anyio
async def test_an_unreachable_quota_store_is_a_503() -> None:
    lim = make("unix:///nonexistent/redis.sock")
    with pytest.raises(NotReady, match="quota store"):
        await lim.reserve("team", 10)
    await lim.aclose()


def test_caps_and_scopes() -> None:
    lim = make(None, generator_max_n=64, generator_max_tokens=256)
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
