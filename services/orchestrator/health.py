"""Readiness: can this orchestrator serve and drive runs, i.e. do Postgres and Redis answer?
(/healthz stays a liveness check that answers while they are down.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis import Redis
from sqlalchemy import Engine, text

logger = logging.getLogger(__name__)


def _postgres(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _check(name: str, probe: Callable[[], Any], timeout_s: float) -> str:
    """ "ok", or why the dependency counts as down (the full error goes to the log, not to the
    unauthenticated caller)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(probe), timeout_s)
    except TimeoutError:
        logger.warning("readiness: %s did not answer within %.1f s", name, timeout_s)
        return f"no answer within {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means "down"; logged
        logger.warning("readiness: %s is down: %s", name, exc)
        return f"unreachable ({type(exc).__name__})"
    return "ok"


async def readiness(engine: Engine, redis: Redis, timeout_s: float) -> tuple[bool, dict[str, Any]]:
    """(ready, body): both stores are checked at once, each bounded by timeout_s."""
    names = ("postgres", "redis")
    states = await asyncio.gather(
        _check("postgres", lambda: _postgres(engine), timeout_s),
        _check("redis", redis.ping, timeout_s),
    )
    checks = dict(zip(names, states, strict=True))
    down = [name for name, state in checks.items() if state != "ok"]
    if down:
        return False, {"status": "unavailable", "down": down, "checks": checks}
    return True, {"status": "ready", "checks": checks}
