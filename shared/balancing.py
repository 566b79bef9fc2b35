"""Client-side balancing over replicas of one service (several generators behind GOLD_GENERATOR_URL).

Requests go round-robin over the replicas that are up. A replica whose request failed (not reached, or
answered 5xx) is down: it is skipped for `retry_after_s`, then probed (GET /readyz) before it takes
requests again. When every replica is down, all are tried anyway, in round-robin order: with one URL
the client behaves as if there were no balancing at all."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)


class Replicas:
    """Which base URL the next request goes to. Thread-safe: the orchestrator calls from several
    threads (one per run driven, plus request handlers)."""

    def __init__(
        self,
        urls: Sequence[str],
        probe: Callable[[str], bool],
        retry_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not urls:
            raise ValueError("no URL to send requests to")
        self.urls = list(dict.fromkeys(url.rstrip("/") for url in urls))
        self.retry_after_s = retry_after_s
        self._probe = probe
        self._clock = clock
        self._down_until: dict[str, float] = {}
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def down(self) -> list[str]:
        with self._lock:
            return [url for url in self.urls if url in self._down_until]

    def candidates(self) -> list[str]:
        """The URLs to try for one request, in order: the replicas that are up, from the next one in
        turn; then, when none is up, the down ones too."""
        with self._lock:
            start = next(self._turn) % len(self.urls)
            ordered = self.urls[start:] + self.urls[:start]
            now = self._clock()
            due = [url for url in ordered if url in self._down_until and self._down_until[url] <= now]
            for url in due:  # one probe per interval, whichever thread gets here first
                self._down_until[url] = now + self.retry_after_s
        for url in due:
            if self._probe(url):
                self.succeeded(url)
        with self._lock:
            up = [url for url in ordered if url not in self._down_until]
            return up or ordered

    def failed(self, url: str, reason: str) -> None:
        with self._lock:
            if url not in self._down_until:
                logger.warning("%s is down (%s): skipped for %.0f s", url, reason, self.retry_after_s)
            self._down_until[url] = self._clock() + self.retry_after_s

    def succeeded(self, url: str) -> None:
        with self._lock:
            if self._down_until.pop(url, None) is not None:
                logger.info("%s is up again", url)
