"""The processes an engine starts beside the generator (vLLM's EngineCore, its workers and their
`multiprocessing.resource_tracker`s), found by the process tree and stopped when the engine dies or
closes. A SIGKILLed EngineCore cannot stop its own children: they are re-parented to PID 1 and
would outlive the generator (a resource tracker did), so they are recorded while the engine loads,
as the generator's descendants that appeared meanwhile, and stopped by that record."""

from __future__ import annotations

import logging
import multiprocessing.resource_tracker
from collections.abc import Iterable
from contextlib import suppress

import psutil

logger = logging.getLogger(__name__)


def descendants() -> set[psutil.Process]:
    """Every process below this one now (psutil.Process compares by PID and start time, so a
    recycled PID is a different process)."""
    return set(psutil.Process().children(recursive=True))


def started_since(before: set[psutil.Process]) -> list[psutil.Process]:
    """The descendants that appeared since `before`, less this process's own resource tracker (it
    serves every multiprocessing user here and ends with this process)."""
    own_tracker = getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)
    return sorted((p for p in descendants() - before if p.pid != own_tracker), key=lambda p: p.pid)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_resource_tracker(process: psutil.Process) -> bool:
    try:
        return any("multiprocessing.resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} ({process.name()})"
    except psutil.Error:
        return str(process.pid)


def stop(processes: Iterable[psutil.Process], what: str, grace_s: float = 5.0) -> list[int]:
    """Stop those of `processes` still alive: SIGTERM, then SIGKILL after `grace_s`. Resource
    trackers go last: one exits by itself, unlinking the shared memory it tracked, once every
    process that held its pipe is gone, and ignores SIGTERM; only one still there then is killed.
    Returns the PIDs it had to stop (logged with `what`)."""
    alive = [p for p in processes if _alive(p)]
    if not alive:
        return []
    trackers = [p for p in alive if _is_resource_tracker(p)]
    others = [p for p in alive if p not in trackers]
    logger.warning("stopping %d processes %s left: %s", len(alive), what, ", ".join(map(_describe, alive)))
    for process in others:
        with suppress(psutil.NoSuchProcess):
            process.terminate()
    for group in (others, trackers):
        _, left = psutil.wait_procs(group, timeout=grace_s)
        for process in left:
            with suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(left, timeout=grace_s)  # reaps those that are this process's children
    return [p.pid for p in alive]
