"""Linux's parent-death signal: a child process asks the kernel for SIGTERM when the process that
started it dies, even by kill -9. Used by the local launcher for the services it spawns and by the
trainer worker for what it forks."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1

# Looked up at import, in the parent: in a forked child (preexec_fn, at-fork hooks) only the system
# call should run, not a library lookup that may take locks another parent thread held at the fork.
_prctl: Callable[..., int] | None = (
    ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
)


def die_with_parent() -> None:
    """Call in the child: SIGTERM when its parent dies (a no-op off Linux)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
