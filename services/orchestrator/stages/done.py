"""What a stage body hands back to the runner (services/orchestrator/stages/__init__.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session


def _nothing(session: Session) -> None:
    pass


@dataclass(frozen=True)
class Done:
    """A finished stage body: its writes and the step's result (step.result). The runner commits
    both with the step's done mark in ONE transaction, so a step interrupted by a crash leaves
    nothing behind and runs again. Bodies read and call services; they write only in `write`."""

    result: dict[str, Any]
    write: Callable[[Session], None] = _nothing
    # Recorded like a success (its rows are worth keeping to read), then the run fails with it.
    failure: str | None = None
