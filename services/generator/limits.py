"""Per-key request and token limits over a sliding minute, and the n/max_tokens caps."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from services.generator.config import GeneratorSettings, Scope
from shared.errors import Forbidden, InvalidInput, RateLimited

WINDOW_S = 60.0


@dataclass
class _Usage:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_total: int = 0


class KeyLimiter:
    """In-process limits (one generator process per engine). A reservation is taken before the
    engine call from the request's upper bound and corrected with the real usage afterwards."""

    def __init__(self, settings: GeneratorSettings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.clock = clock
        self._usage: dict[str, _Usage] = {}
        self._lock = threading.Lock()

    def _trim(self, usage: _Usage, now: float) -> None:
        while usage.requests and usage.requests[0] <= now - WINDOW_S:
            usage.requests.popleft()
        while usage.tokens and usage.tokens[0][0] <= now - WINDOW_S:
            usage.token_total -= usage.tokens.popleft()[1]

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

    def reserve(self, key: str | None, tokens: int, *, size_field: str = "n") -> int:
        """Count one request and `tokens` against the key's minute; 429 if either is used up.
        A request over the whole minute's budget is a 422 naming `size_field`, what to lower."""
        policy = self.settings.policy(key)
        rpm = policy.requests_per_minute or self.settings.generator_requests_per_minute
        tpm = policy.tokens_per_minute or self.settings.generator_tokens_per_minute
        name = key or "anonymous"
        if tokens > tpm:
            raise InvalidInput(
                size_field,
                f"this request may use up to {tokens} tokens, over the key's limit of "
                f"{tpm} tokens per minute: lower {size_field} or max_tokens",
            )
        with self._lock:
            now = self.clock()
            usage = self._usage.setdefault(name, _Usage())
            self._trim(usage, now)
            if len(usage.requests) >= rpm:
                wait = math.ceil(usage.requests[0] + WINDOW_S - now)
                raise RateLimited(
                    f"rate limit of {rpm} requests per minute reached for key {name!r}: retry in {wait} s",
                    headers={"Retry-After": str(max(wait, 1))},
                )
            if usage.token_total + tokens > tpm:
                wait = math.ceil(usage.tokens[0][0] + WINDOW_S - now) if usage.tokens else 1
                raise RateLimited(
                    f"token limit of {tpm} tokens per minute reached for key {name!r}: retry "
                    f"in {wait} s or send smaller requests",
                    headers={"Retry-After": str(max(wait, 1))},
                )
            usage.requests.append(now)
            usage.tokens.append((now, tokens))
            usage.token_total += tokens
        return tokens

    def settle(self, key: str | None, reserved: int, used: int) -> None:
        """Replace a reservation by the tokens really used (positive or negative correction)."""
        delta = used - reserved
        if delta == 0:
            return
        with self._lock:
            usage = self._usage.setdefault(key or "anonymous", _Usage())
            usage.tokens.append((self.clock(), delta))
            usage.token_total += delta
