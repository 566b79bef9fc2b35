"""`gold up` as a user runs it, stopped the ways a launcher gets stopped: Ctrl-C, kill (SIGTERM), a
closed terminal (SIGHUP) and kill -9. Afterwards no process it started is left and its ports are free;
after kill -9 the services die with it and the next start stops the daemons it left (the embedded
PostgreSQL and Redis)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from gold.cli import EXIT_PORT_IN_USE
from gold.stack import PortInUse
from gold.stack_record import RECORD_FILE, clear_stale_stack
from tests.support import on_free_ports

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1200)]


def _terminal_dispositions() -> None:
    """As a command typed at a terminal starts: SIGINT and SIGHUP not ignored (this test may itself
    run in the background, e.g. `make test &`, whose children inherit an ignored SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


LAUNCHED: list[Launcher] = []


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """A failed test must not leave its stack to the next: kill its launchers (the services die
    with them) and stop the daemons they recorded."""
    yield
    for launcher in LAUNCHED:
        if launcher.process.poll() is None:
            launcher.process.kill()
            launcher.process.wait()
        clear_stale_stack(launcher.data_dir)
    LAUNCHED.clear()


class Launcher:
    @classmethod
    def ready(cls, data_dir: Path, models_dir: Path) -> Launcher:
        """`gold up` started and ready, started again on other ports if one was taken meanwhile."""

        def start(ports: dict[str, int]) -> Launcher:
            launcher = cls(data_dir, models_dir, ports)
            launcher.wait_ready()
            return launcher

        return on_free_ports(start)

    def __init__(self, data_dir: Path, models_dir: Path, ports: dict[str, int]):
        self.data_dir = data_dir
        self.ports = ports
        env = os.environ | {
            "GOLD_DATA_DIR": str(data_dir),
            "GOLD_MODEL_DIR": str(models_dir),
            **{f"GOLD_{name.upper()}_URL": f"http://127.0.0.1:{port}" for name, port in self.ports.items()},
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "launcher.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from gold.cli import app; app()", "up"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # like a terminal's job: signals reach only what the test sends
                preexec_fn=_terminal_dispositions,
            )
        LAUNCHED.append(self)

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.ports['orchestrator']}/healthz"
        while time.monotonic() < deadline:
            if self.process.poll() == EXIT_PORT_IN_USE:
                raise PortInUse(self.log.read_text()[-3000:])
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(url, timeout=2.0).status_code == 200 and "Ctrl-C" in self.log.read_text():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        pytest.fail(f"gold up not ready after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def started(self) -> dict[str, psutil.Process]:
        """Everything this launcher started: its descendants and the recorded daemons."""
        record = json.loads((self.data_dir / RECORD_FILE).read_text())
        processes = {p.pid: p for p in psutil.Process(self.process.pid).children(recursive=True)}
        for item in record["processes"]:
            processes.setdefault(item["pid"], psutil.Process(item["pid"]))
        names = {item["pid"]: item["name"] for item in record["processes"]}
        return {f"{names.get(pid, p.name())}:{pid}": p for pid, p in processes.items()}


def gone_within(processes: dict[str, psutil.Process], timeout_s: float) -> list[str]:
    _, alive = psutil.wait_procs(list(processes.values()), timeout=timeout_s)
    return [name for name, p in processes.items() if p in alive]


def ports_free(ports: dict[str, int]) -> bool:
    return not any(c.laddr.port in ports.values() for c in psutil.net_connections("tcp") if c.laddr)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_stops_everything_the_launcher_started(sig, tmp_path, models_dir):
    launcher = Launcher.ready(tmp_path / "gold", models_dir)
    started = launcher.started()
    assert {"generator", "scorer", "trainer-0", "orchestrator", "postgres", "redis"} <= {
        name.split(":")[0] for name in started
    }
    launcher.process.send_signal(sig)
    assert launcher.process.wait(timeout=120) == 0, launcher.log.read_text()[-3000:]
    assert gone_within(started, 30) == []
    assert ports_free(launcher.ports)
    assert not (launcher.data_dir / RECORD_FILE).exists()


def test_after_kill_9_the_services_die_and_the_next_start_stops_the_daemons_left(tmp_path, models_dir):
    first = Launcher.ready(tmp_path / "gold", models_dir)
    started = first.started()
    first.process.kill()
    first.process.wait()
    daemons = {name: p for name, p in started.items() if name.split(":")[0] in ("postgres", "redis")}
    services = {name: p for name, p in started.items() if name not in daemons}
    assert gone_within(services, 60) == []  # PR_SET_PDEATHSIG: SIGTERM on the launcher's death
    assert sorted(gone_within(daemons, 1)) == sorted(daemons)  # daemons outlive it ...

    second = Launcher.ready(tmp_path / "gold", models_dir)  # same data directory
    assert gone_within(daemons, 1) == []  # ... until the next start stops them
    assert "left by a launcher that died" in second.log.read_text()
    restarted = second.started()
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=120) == 0
    assert gone_within(restarted, 30) == []
    assert ports_free(second.ports)
