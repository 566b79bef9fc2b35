"""A port picked free and taken by another process before the service binds it (the services bind
only after their lifespan has loaded the models, minutes after the pick): the stack reads the bind
failure as PortInUse, and the tests' on_free_ports starts again on fresh ports. The service is a real
uvicorn process (FastAPI's docs page stands in for /readyz), spawned and awaited as the stack does."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gold.stack import PortInUse, ServiceProcess, Stack
from shared.settings import GoldSettings
from tests.support import free_port, on_free_ports


class Thief:
    """Listens on ports it did not pick, as any process on the machine may."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def take(self, port: int) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        self.sockets.append(sock)

    @property
    def ports(self) -> set[int]:
        return {sock.getsockname()[1] for sock in self.sockets}


@pytest.fixture
def thief() -> Iterator[Thief]:
    taker = Thief()
    yield taker
    for sock in taker.sockets:
        sock.close()


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.stop()


def start_generator(
    data_dir: Path, ports: dict[str, int], stacks: list[Stack], app: str = "fastapi:FastAPI"
) -> Stack:
    """A stack of one stand-in generator on ports["generator"], started as Stack.start starts one."""
    stack = Stack(GoldSettings(data_dir=data_dir), ports=ports)
    stacks.append(stack)
    stack.env = os.environ | {
        "UVICORN_APP": app,
        "UVICORN_FACTORY": "true",
        "UVICORN_HOST": "127.0.0.1",
        "UVICORN_PORT": str(ports["generator"]),
    }
    service = ServiceProcess("generator", "uvicorn", stack.generator_url, ready_path="/docs")
    stack.services = [service]
    data_dir.mkdir(exist_ok=True)
    stack._spawn(service, data_dir)
    stack.wait_ready(60)
    return stack


def test_a_port_taken_between_pick_and_bind_fails_a_single_start(tmp_path, thief, stacks):
    ports = {"orchestrator": free_port(), "generator": free_port(), "scorer": free_port()}
    thief.take(ports["generator"])
    with pytest.raises(PortInUse, match="address already in use"):
        start_generator(tmp_path, ports, stacks)


def test_on_free_ports_starts_again_on_fresh_ports(tmp_path, thief, stacks):
    picked: list[dict[str, int]] = []

    def start(ports: dict[str, int]) -> Stack:
        picked.append(ports)
        if len(picked) == 1:
            thief.take(ports["generator"])  # after the pick, before the bind
        return start_generator(tmp_path, ports, stacks)

    stack = on_free_ports(start)
    assert len(picked) == 2 and stack.ports == picked[1]
    assert stack.ports["generator"] not in thief.ports
    stack.check_alive()  # the stand-in serves on its fresh port


def test_the_launcher_refuses_a_port_already_taken_as_port_in_use(tmp_path, thief):
    ports = {"orchestrator": free_port(), "generator": free_port(), "scorer": free_port()}
    thief.take(ports["scorer"])
    with pytest.raises(PortInUse, match=f"port {ports['scorer']} for the scorer"):
        Stack(GoldSettings(data_dir=tmp_path), ports=ports).start()


def test_an_earlier_bind_failure_in_the_log_is_not_this_failure(tmp_path, thief, stacks):
    """Logs are appended across restarts: a service that now fails otherwise is not a port clash."""
    ports = {"orchestrator": free_port(), "generator": free_port(), "scorer": free_port()}
    thief.take(ports["generator"])
    with pytest.raises(PortInUse):
        start_generator(tmp_path, ports, stacks)
    with pytest.raises(RuntimeError) as failure:
        start_generator(tmp_path, ports | {"generator": free_port()}, stacks, app="no_such_module:app")
    assert not isinstance(failure.value, PortInUse)
    assert "no_such_module" in str(failure.value)
