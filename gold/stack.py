"""The local stack: embedded PostgreSQL and Redis (unless URLs are given) plus the four services
as child processes, with logs under the data directory. Stopping it stops everything it started;
the services also die with the launcher (PR_SET_PDEATHSIG), and what a killed launcher leaves behind
(the embedded servers are daemons) is stopped at the next start (gold/stack_record.py)."""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from gold.stack_record import RecordedProcess, clear_stale_stack, remove_record, write_record
from shared.db.migrate import upgrade
from shared.local_servers import LocalServer, start_postgres, start_redis
from shared.parent_death import die_with_parent
from shared.settings import GoldSettings

logger = logging.getLogger(__name__)

# How a bind failure reads in a service's log: asyncio's "error while attempting to bind on address
# (...): address already in use", which uvicorn logs before it exits.
ADDRESS_IN_USE = os.strerror(errno.EADDRINUSE).lower()


class PortInUse(RuntimeError):
    """A port the stack serves on is held by another process. A free port cannot be reserved: a
    service binds its port only once its models are loaded (uvicorn runs the lifespan first), minutes
    after the launcher checked it, and anything on the machine may take it meanwhile, an outgoing
    connection's ephemeral port included. Whoever chose the ports may start again on others."""


@dataclass
class ServiceProcess:
    name: str
    module: str
    url: str | None  # health-checked HTTP service, or None for a worker
    ready_path: str = "/readyz"
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    log_start: int = 0  # where this process's lines begin in the log (appended across restarts)


@dataclass
class Stack:
    settings: GoldSettings
    trainers: int = 1
    # Default: the ports of GOLD_ORCHESTRATOR_URL, GOLD_GENERATOR_URL and GOLD_SCORER_URL (8000-8002).
    ports: dict[str, int] = field(default_factory=dict)
    servers: list[LocalServer] = field(default_factory=list)
    services: list[ServiceProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    token: str = ""

    def __post_init__(self) -> None:
        urls = {
            "orchestrator": self.settings.orchestrator_url,
            "generator": self.settings.generator_urls[0],  # the one generator started here
            "scorer": self.settings.scorer_url,
        }
        self.ports = {name: urlsplit(url).port or 80 for name, url in urls.items()} | self.ports

    @property
    def orchestrator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['orchestrator']}"

    @property
    def generator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['generator']}"

    @property
    def scorer_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['scorer']}"

    # -- start ---------------------------------------------------------------------------------
    def start(self, ready_timeout_s: float = 900.0) -> None:
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        stale = clear_stale_stack(data_dir)
        if stale:
            logger.warning("stopped a stack left by a launcher that died: %s", ", ".join(stale))
        for name, port in self.ports.items():
            if _port_in_use(port):
                raise PortInUse(
                    f"port {port} for the {name} is in use: stop what holds it or choose other ports"
                )
        database_url = self.settings.database_url
        if not database_url:
            server = start_postgres(data_dir / "postgres")
            self.servers.append(server)
            database_url = server.url
        redis_url = self.settings.redis_url
        if not redis_url:
            server = start_redis(data_dir / "redis")
            self.servers.append(server)
            redis_url = server.url
        self._record()  # the daemons, before anything else can fail
        upgrade(database_url)
        self.token = local_token(data_dir)
        self.env = {
            **os.environ,
            "GOLD_DATA_DIR": str(data_dir),
            "GOLD_ARTIFACT_DIR": str(self.settings.artifacts),
            "GOLD_DATABASE_URL": database_url,
            "GOLD_REDIS_URL": redis_url,
            "GOLD_API_KEYS": api_keys_json(self.settings, self.token),
            "GOLD_SERVICE_TOKEN": self.token,
            "GOLD_ORCHESTRATOR_PORT": str(self.ports["orchestrator"]),
            "GOLD_GENERATOR_PORT": str(self.ports["generator"]),
            "GOLD_SCORER_PORT": str(self.ports["scorer"]),
            "GOLD_GENERATOR_URL": self.generator_url,
            "GOLD_SCORER_URL": self.scorer_url,
            "GOLD_ORCHESTRATOR_URL": self.orchestrator_url,
            # the teachers `make teachers` installed are served beside the default (teacher.model)
            "GOLD_GENERATOR_PACKAGED_TEACHERS": os.environ.get("GOLD_GENERATOR_PACKAGED_TEACHERS", "true"),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.services = [
            ServiceProcess("generator", "services.generator", self.generator_url),
            ServiceProcess("scorer", "services.scorer", self.scorer_url),
            *[ServiceProcess(f"trainer-{i}", "services.trainer", None) for i in range(self.trainers)],
            ServiceProcess("orchestrator", "services.orchestrator", self.orchestrator_url, "/healthz"),
        ]
        logs = data_dir / "logs"
        logs.mkdir(exist_ok=True)
        for service in self.services:
            self._spawn(service, logs)
        self._record()
        self.wait_ready(ready_timeout_s)

    def _record(self) -> None:
        """Write stack.json: what to stop should this launcher die without stopping it."""
        # PostgreSQL's fast shutdown is SIGINT (its SIGTERM waits for every client to leave).
        stop_signals = {"postgres": signal.SIGINT, "redis": signal.SIGTERM}
        running = [
            RecordedProcess.of(server.name, pid, group=False, stop_signal=stop_signals[server.name])
            for server in self.servers
            if (pid := server.current_pid()) is not None
        ]
        running += [
            RecordedProcess.of(s.name, s.process.pid, group=True)
            for s in self.services
            if s.process is not None and s.process.poll() is None
        ]
        launcher = RecordedProcess.of("launcher", os.getpid(), group=False)
        assert launcher is not None  # this process
        write_record(self.settings.data_dir, launcher, [p for p in running if p is not None])

    def _spawn(self, service: ServiceProcess, logs: Path) -> None:
        service.log_path = logs / f"{service.name}.log"
        handle = service.log_path.open("ab")
        service.log_start = handle.tell()
        service.process = subprocess.Popen(
            [sys.executable, "-m", service.module],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops children in order
            preexec_fn=die_with_parent,  # the services die with the launcher, even by kill -9
        )
        logger.info("started %s (pid %d), log %s", service.name, service.process.pid, service.log_path)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [s for s in self.services if s.url]
        while pending:
            for service in list(pending):
                self.check_alive(service)
                if _ready(service):
                    pending.remove(service)
                    logger.info("%s ready at %s", service.name, service.url)
            if time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise RuntimeError(
                    f"not ready after {timeout_s:.0f} s: {names} (see {self.settings.data_dir}/logs)"
                )
            if pending:
                time.sleep(1.0)

    def check_alive(self, service: ServiceProcess | None = None) -> None:
        for s in [service] if service else self.services:
            if s.process is not None and s.process.poll() is not None:
                tail = _tail(s.log_path, s.log_start)
                if s.url and ADDRESS_IN_USE in tail:
                    raise PortInUse(f"{s.name} could not bind {s.url}: {ADDRESS_IN_USE}\n{tail}")
                raise RuntimeError(
                    f"{s.name} exited with code {s.process.returncode}; last log lines:\n{tail}"
                )

    # -- faults and restarts (used by tests/faults) --------------------------------------------
    def service(self, name: str) -> ServiceProcess:
        return next(s for s in self.services if s.name == name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a service's whole process group (a worker and its work horse) without cleanup."""
        service = self.service(name)
        if service.process is not None and service.process.poll() is None:
            os.killpg(service.process.pid, sig)
            service.process.wait()

    def restart(self, name: str, ready_timeout_s: float = 900.0) -> None:
        service = self.service(name)
        self.kill(name, signal.SIGTERM)
        assert service.log_path is not None
        self._spawn(service, service.log_path.parent)
        self._record()
        if service.url:
            deadline = time.monotonic() + ready_timeout_s
            while not _ready(service):
                self.check_alive(service)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after restart")
                time.sleep(1.0)

    # -- stop ----------------------------------------------------------------------------------
    def stop(self) -> None:
        # A second Ctrl-C (or a SIGTERM after it) must not cut the shutdown short and leave servers.
        with stop_signals_handled_by(signal.SIG_IGN):
            self._stop()

    def _stop(self) -> None:
        for service in reversed(self.services):
            if service.process is not None and service.process.poll() is None:
                os.killpg(service.process.pid, signal.SIGTERM)
        for service in reversed(self.services):
            if service.process is None:
                continue
            try:
                service.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait()
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        remove_record(self.settings.data_dir)

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals_handled_by(handler: Any) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP go to `handler` inside, to their previous handlers after. A signal
    the process was started ignoring stays ignored (`nohup` ignores SIGHUP, a shell script's
    `cmd &` ignores SIGINT): that is what its caller asked for."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may change signal handlers
        return
    previous = {
        sig: signal.signal(sig, handler)
        for sig in STOP_SIGNALS
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, restored in previous.items():
            signal.signal(sig, restored)


# The name of the launcher's own API key: the owner of the runs `gold demo` and `gold eval` submit.
LOCAL_KEY_NAME = "local"


def api_keys_json(settings: GoldSettings, token: str) -> str:
    """GOLD_API_KEYS for the services: the keys the user set (their teams keep working against the
    local stack) plus the launcher's own under LOCAL_KEY_NAME."""
    keys = {name: secret.get_secret_value() for name, secret in settings.api_keys.items()}
    return json.dumps(keys | {LOCAL_KEY_NAME: token})


def local_token(data_dir: Path) -> str:
    """The local stack's API key, generated once and kept private in the data directory."""
    path = data_dir / "api_token"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _ready(service: ServiceProcess) -> bool:
    try:
        return httpx.get(f"{service.url}{service.ready_path}", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path | None, start: int = 0, lines: int = 30) -> str:
    """The last lines of a log from byte `start` on."""
    if path is None or not path.exists():
        return "(no log)"
    with path.open("rb") as log:
        log.seek(start)
        text = log.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
