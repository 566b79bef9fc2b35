import pytest

from gold import cli
from shared.errors import UpstreamError


def flaky(failures: list[Exception], value: str = "run"):
    def read() -> str:
        if failures:
            raise failures.pop(0)
        return value

    return read


def test_a_slow_orchestrator_is_waited_for_not_the_end_of_the_evaluation():
    timeout = UpstreamError("orchestrator", "ReadTimeout calling /runs/x: timed out", 503, retryable=True)
    assert cli.patiently(flaky([timeout, timeout])) == "run"


def test_a_wrong_request_is_not_retried():
    wrong = UpstreamError("orchestrator", "answered 404", 404)
    calls = [wrong]
    with pytest.raises(UpstreamError, match="404"):
        cli.patiently(flaky(calls))
    assert calls == []  # called once


def test_patience_runs_out(monkeypatch):
    monkeypatch.setattr(cli, "FOLLOW_PATIENCE_S", 0.0)
    down = UpstreamError("orchestrator", "ConnectError", 503, retryable=True)
    with pytest.raises(UpstreamError, match="ConnectError"):
        cli.patiently(flaky([down, down, down]))


def test_a_dead_stack_ends_the_wait_at_once():
    class DeadStack:
        def check_alive(self) -> None:
            raise RuntimeError("the orchestrator exited with code 1")

    down = UpstreamError("orchestrator", "ConnectError", 503, retryable=True)
    with pytest.raises(RuntimeError, match="exited"):
        cli.patiently(flaky([down, down]), DeadStack())
