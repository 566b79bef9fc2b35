"""Per-key request and token limits, the n/max_tokens caps and scopes.

The counters live in Redis when the stack has one (GOLD_REDIS_URL), so every generator replica
draws on one budget per key; without Redis they live in this process. The `limits` library keeps
them: requests in a moving minute (an exact log), tokens in fixed minutes (one counter a minute,
which a settlement can correct up or down).

A request reserves its upper bound of tokens before the engine runs; the reservation is settled
with the tokens really used when the request ends, whatever ended it (`Quota`)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import anyio
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.errors import StorageError

from services.generator.config import GeneratorSettings, Scope
from shared.errors import Forbidden, InvalidInput, NotReady, RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

logger = logging.getLogger(__name__)

WINDOW_S = 60
KEY_PREFIX = "gold:generator:limits"


def quota_storage(redis_url: str | None) -> Storage:
    """Redis at `redis_url` (redis://, rediss:// or unix://, as GOLD_REDIS_URL is written), or this
    process's memory when there is none."""
    if not redis_url:
        return MemoryStorage()
    uri = "redis+" + redis_url if redis_url.startswith("unix://") else redis_url
    return RedisStorage(
        "async+" + uri,
        implementation="redispy",
        key_prefix=KEY_PREFIX,
        wrap_exceptions=True,
        socket_timeout=5,
        socket_connect_timeout=5,
    )


@dataclass
class Reservation:
    """Tokens held for one request. `used` is what the request really used, recorded by the work
    as it learns it (0 until then): settling returns the difference to the key's budget."""

    name: str
    tokens: int
    item: RateLimitItem
    window: int
    used: int = 0
    settled: bool = False

    def use(self, prompt_tokens: int, completion_tokens: int) -> None:
        """What the request has used so far (settled when the request ends)."""
        self.used = prompt_tokens + completion_tokens


class TokenUsage(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


class HasUsage(Protocol):
    """A response that reports the tokens its request used."""

    @property
    def usage(self) -> TokenUsage: ...


Metered = TypeVar("Metered", bound=HasUsage)


class KeyLimiter:
    def __init__(
        self,
        settings: GeneratorSettings,
        *,
        window_s: int = WINDOW_S,
        clock: Callable[[], float] = time.time,  # wall time: replicas share the windows
    ):
        self.settings = settings
        self.storage = quota_storage(settings.redis_url)
        self.window_s = window_s
        self.clock = clock
        self._requests = MovingWindowRateLimiter(self.storage)
        self._tokens = FixedWindowRateLimiter(self.storage)

    async def aclose(self) -> None:
        # quota_storage asks for the redis-py implementation, whose bridge holds the connection.
        if isinstance(self.storage, RedisStorage) and isinstance(self.storage.bridge, RedispyBridge):
            # limits types the client by the commands it sends; it is redis-py's asyncio client.
            client = cast("AsyncRedis", self.storage.bridge.get_connection())
            await client.aclose()

    def check_scope(self, key: str | None, scope: Scope) -> None:
        policy = self.settings.policy(key)
        if policy.scopes is not None and scope not in policy.scopes:
            raise Forbidden(
                f"API key {key!r} may not call {scope} endpoints (its scopes: {policy.scopes}); "
                "ask the operator to add the scope in GOLD_GENERATOR_KEY_POLICIES"
            )

    def check_caps(
        self,
        key: str | None,
        n: int,
        max_tokens: int,
        *,
        n_field: str = "n",
        tokens_field: str = "max_tokens",
    ) -> None:
        policy = self.settings.policy(key)
        max_n = policy.max_n or self.settings.generator_max_n
        cap_tokens = policy.max_tokens or self.settings.generator_max_tokens
        if n > max_n:
            raise InvalidInput(
                n_field, f"n={n} is over this key's cap of {max_n}: ask for fewer samples per request"
            )
        if max_tokens > cap_tokens:
            raise InvalidInput(
                tokens_field, f"max_tokens={max_tokens} is over the cap of {cap_tokens}: lower it"
            )

    def _items(self, key: str | None) -> tuple[RateLimitItem, RateLimitItem]:
        policy = self.settings.policy(key)
        rpm = policy.requests_per_minute or self.settings.generator_requests_per_minute
        tpm = policy.tokens_per_minute or self.settings.generator_tokens_per_minute
        return RateLimitItemPerSecond(rpm, self.window_s), RateLimitItemPerSecond(tpm, self.window_s)

    def _window(self) -> tuple[int, float]:
        now = self.clock()
        return int(now // self.window_s), now

    async def reserve(self, key: str | None, tokens: int, *, size_field: str = "n") -> Reservation:
        """Count one request and `tokens` against the key's minute; 429 if either is used up.
        A request over the whole minute's budget is a 422 naming `size_field`, what to lower."""
        requests, token_item = self._items(key)
        name = key or "anonymous"
        if tokens > token_item.amount:
            raise InvalidInput(
                size_field,
                f"this request may use up to {tokens} tokens, over the key's limit of "
                f"{token_item.amount} tokens per minute: lower {size_field} or max_tokens",
            )
        window, now = self._window()
        with _store_errors():
            if not await self._tokens.hit(token_item, name, str(window), cost=tokens):
                # A fixed window counts a refused hit: give it back, the request takes nothing.
                await self.storage.incr(token_item.key_for(name, str(window)), self.window_s, -tokens)
                wait = math.ceil((window + 1) * self.window_s - now)
                raise RateLimited(
                    f"token limit of {token_item.amount} tokens per minute reached for key {name!r}: "
                    f"retry in {wait} s or send smaller requests",
                    headers={"Retry-After": str(max(wait, 1))},
                )
            if not await self._requests.hit(requests, name):
                await self.storage.incr(token_item.key_for(name, str(window)), self.window_s, -tokens)
                stats = await self._requests.get_window_stats(requests, name)
                wait = math.ceil(stats.reset_time - time.time())
                raise RateLimited(
                    f"rate limit of {requests.amount} requests per minute reached for key {name!r}: "
                    f"retry in {max(wait, 1)} s",
                    headers={"Retry-After": str(max(wait, 1))},
                )
        return Reservation(name, tokens, token_item, window)

    async def settle(self, held: Reservation) -> None:
        """Replace a reservation by the tokens it really used (`held.used`); once only. Tokens
        left over go back to the minute that held them (none if that minute is over); tokens
        beyond the reservation (prompts) count in the current minute."""
        if held.settled:
            return
        held.settled = True
        delta = held.used - held.tokens
        window, _ = self._window()
        if delta == 0 or (delta < 0 and window != held.window):
            return
        try:
            await self.storage.incr(held.item.key_for(held.name, str(window)), self.window_s, delta)
        except StorageError as exc:  # the answer is already given: a lost correction only skews a minute
            logger.warning("could not settle %d tokens of key %r: %s", delta, held.name, exc.storage_error)

    async def tokens_used(self, key: str | None) -> int:
        """Tokens counted against the key in the current minute (reservations included)."""
        _, token_item = self._items(key)
        window, _ = self._window()
        with _store_errors():
            return await self.storage.get(token_item.key_for(key or "anonymous", str(window)))

    @asynccontextmanager
    async def quota(self, key: str | None) -> AsyncIterator[Quota]:
        """One request's quota: what it reserves is settled when the block ends, however it ends
        (success, error, cancellation, a stream the client dropped)."""
        quota = Quota(self, key)
        try:
            yield quota
        finally:
            with anyio.CancelScope(shield=True):  # a cancelled request still settles
                for reserving in quota.reserving:
                    await asyncio.wait([reserving])
                    if not reserving.cancelled() and reserving.exception() is None:
                        await self.settle(reserving.result())


class Quota:
    """The limits as one request sees them: its key, and the reservations it made."""

    def __init__(self, limiter: KeyLimiter, key: str | None):
        self.limiter = limiter
        self.key = key
        self.reserving: list[asyncio.Future[Reservation]] = []

    def check_caps(
        self, n: int, max_tokens: int, *, n_field: str = "n", tokens_field: str = "max_tokens"
    ) -> None:
        self.limiter.check_caps(self.key, n, max_tokens, n_field=n_field, tokens_field=tokens_field)

    async def hold(
        self,
        n: int,
        max_tokens: int,
        *,
        prompts: int = 1,
        tokens_field: str = "max_tokens",
        size_field: str = "n",
    ) -> Reservation:
        """The caps checked for `prompts` prompts of `n` completions of at most `max_tokens`
        tokens each, and their upper bound of tokens reserved."""
        self.check_caps(n, max_tokens, tokens_field=tokens_field)
        return await self.reserve(prompts * n * max_tokens, size_field=size_field)

    async def spend(
        self,
        work: Callable[[], Awaitable[Metered]],
        n: int,
        max_tokens: int,
        *,
        prompts: int = 1,
        tokens_field: str = "max_tokens",
        size_field: str = "n",
    ) -> Metered:
        """`work` under `hold`'s reservation, charged the usage its response reports (an error
        before that releases the reservation)."""
        held = await self.hold(
            n, max_tokens, prompts=prompts, tokens_field=tokens_field, size_field=size_field
        )
        response = await work()
        held.use(response.usage.prompt_tokens, response.usage.completion_tokens)
        return response

    async def reserve(self, tokens: int, *, size_field: str = "n") -> Reservation:
        # A reservation runs to its end in its own task even if the request is cancelled while it
        # talks to Redis, so that what it took is known, and released when the request ends.
        reserving = asyncio.ensure_future(self.limiter.reserve(self.key, tokens, size_field=size_field))
        self.reserving.append(reserving)
        return await asyncio.shield(reserving)


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except StorageError as exc:
        raise NotReady(
            f"the quota store (Redis) is unreachable: {exc.storage_error}; retry shortly",
            headers={"Retry-After": "5"},
        ) from exc
