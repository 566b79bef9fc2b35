"""What a launcher started, recorded in the data directory (stack.json), so that a stack left behind
by a launcher killed without cleanup (kill -9, OOM) is found at the next start and stopped.

The services die with their launcher by themselves (PR_SET_PDEATHSIG, see gold/stack.py); the embedded
PostgreSQL and Redis are daemons and do not, so they are what a stale record usually names. A process
is only signalled when its pid AND its start time match the record: a pid the system has since given
to another process is left alone."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

RECORD_FILE = "stack.json"


@dataclass(frozen=True)
class RecordedProcess:
    name: str
    pid: int
    started: float  # psutil create_time: tells this process from a later one with the same pid
    group: bool  # a session leader: signal its whole process group (a worker and its work horse)
    stop_signal: int = signal.SIGTERM

    @classmethod
    def of(
        cls, name: str, pid: int, group: bool, stop_signal: int = signal.SIGTERM
    ) -> RecordedProcess | None:
        """The process as it runs now; None when it has already exited."""
        try:
            return cls(name, pid, psutil.Process(pid).create_time(), group, stop_signal)
        except psutil.NoSuchProcess:
            return None

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            started: float = process.create_time()
            if started != self.started:  # the pid now names another process
                return False
            zombie: bool = process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        return not zombie

    def send(self, sig: int) -> None:
        try:
            if self.group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def write_record(data_dir: Path, launcher: RecordedProcess, processes: list[RecordedProcess]) -> None:
    path = data_dir / RECORD_FILE
    document = {"launcher": asdict(launcher), "processes": [asdict(p) for p in processes]}
    path.with_suffix(".tmp").write_text(json.dumps(document, indent=1))
    path.with_suffix(".tmp").replace(path)


def remove_record(data_dir: Path) -> None:
    (data_dir / RECORD_FILE).unlink(missing_ok=True)


def clear_stale_stack(data_dir: Path, timeout_s: float = 30.0) -> list[str]:
    """Stop what a dead launcher left running from this data directory and return the names
    stopped; raise RuntimeError, naming the launcher, when that launcher still runs."""
    path = data_dir / RECORD_FILE
    if not path.exists():
        return []
    document = json.loads(path.read_text())
    launcher = RecordedProcess(**document["launcher"])
    if launcher.pid != os.getpid() and launcher.alive():
        raise RuntimeError(
            f"a stack from {data_dir} is already running (launcher pid {launcher.pid}): stop it with "
            f"Ctrl-C or `kill {launcher.pid}`, or use it with --attach"
        )
    leftovers = [p for p in (RecordedProcess(**item) for item in document["processes"]) if p.alive()]
    for process in leftovers:
        logger.warning("stopping %s (pid %d) left running by a launcher that died", process.name, process.pid)
        process.send(process.stop_signal)
    deadline = time.monotonic() + timeout_s
    while any(p.alive() for p in leftovers) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in leftovers:
        if process.alive():
            process.send(signal.SIGKILL)
    path.unlink()
    return [p.name for p in leftovers]
