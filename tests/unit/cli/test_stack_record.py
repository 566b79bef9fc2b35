"""The stale-stack record with real processes (sleep stands in for a server left behind)."""

import os
import signal
import subprocess

import pytest

from gold.stack_record import RECORD_FILE, RecordedProcess, clear_stale_stack, write_record


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(new_session: bool = False) -> subprocess.Popen:
    # SIGINT stops the stand-in as it stops a server: a test run started in the background
    # (`make test &`) hands its children SIGINT ignored, and sleep keeps that.
    return subprocess.Popen(["sleep", "600"], start_new_session=new_session, preexec_fn=default_sigint)


def dead_launcher() -> RecordedProcess:
    launcher = spawn()
    recorded = RecordedProcess.of("launcher", launcher.pid, group=False)
    launcher.kill()
    launcher.wait()
    return recorded


def test_a_dead_launchers_processes_are_stopped_and_the_record_removed(tmp_path):
    server, service = spawn(), spawn(new_session=True)
    processes = [
        RecordedProcess.of("postgres", server.pid, group=False, stop_signal=signal.SIGINT),
        RecordedProcess.of("generator", service.pid, group=True),
    ]
    write_record(tmp_path, dead_launcher(), processes)
    assert clear_stale_stack(tmp_path) == ["postgres", "generator"]
    assert server.wait(timeout=5) == -signal.SIGINT and service.wait(timeout=5) == -signal.SIGTERM
    assert not (tmp_path / RECORD_FILE).exists()
    assert clear_stale_stack(tmp_path) == []  # nothing recorded: nothing to do


def test_a_running_launcher_is_named_not_stopped(tmp_path):
    launcher = spawn()
    try:
        write_record(tmp_path, RecordedProcess.of("launcher", launcher.pid, group=False), [])
        with pytest.raises(RuntimeError, match=f"launcher pid {launcher.pid}.*--attach"):
            clear_stale_stack(tmp_path)
        assert launcher.poll() is None and (tmp_path / RECORD_FILE).exists()
    finally:
        launcher.kill()
        launcher.wait()


def test_a_reused_pid_is_left_alone(tmp_path):
    other = spawn()
    try:
        recorded = RecordedProcess.of("redis", other.pid, group=False)
        impostor = RecordedProcess(recorded.name, recorded.pid, recorded.started - 100.0, group=False)
        write_record(tmp_path, dead_launcher(), [impostor])
        assert clear_stale_stack(tmp_path) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_this_process_own_record_is_not_a_running_stack(tmp_path):
    write_record(tmp_path, RecordedProcess.of("launcher", os.getpid(), group=False), [])
    assert clear_stale_stack(tmp_path) == []
