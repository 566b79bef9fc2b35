import pytest

from gold import session
from gold.client_errors import NotFoundError, UnreachableError


def flaky(failures: list[Exception], value: str = "run"):
    def read() -> str:
        if failures:
            raise failures.pop(0)
        return value

    return read


def test_a_slow_orchestrator_is_waited_for_not_the_end_of_the_evaluation():
    timeout = UnreachableError("ReadTimeout calling /runs/x: timed out")
    assert session.patiently(flaky([timeout, timeout])) == "run"


def test_a_wrong_request_is_not_retried():
    wrong = NotFoundError("run x not found", status_code=404)
    calls = [wrong]
    with pytest.raises(NotFoundError, match="not found"):
        session.patiently(flaky(calls))
    assert calls == []  # called once


def test_patience_runs_out(monkeypatch):
    monkeypatch.setenv("GOLD_FOLLOW_PATIENCE_S", "0")  # read when the wait starts, not at import
    down = UnreachableError("ConnectError calling /runs/x")
    with pytest.raises(UnreachableError, match="ConnectError"):
        session.patiently(flaky([down, down, down]))


def test_a_dead_stack_ends_the_wait_at_once():
    class DeadStack:
        def check_alive(self) -> None:
            raise RuntimeError("the orchestrator exited with code 1")

    down = UnreachableError("ConnectError calling /runs/x")
    with pytest.raises(RuntimeError, match="exited"):
        session.patiently(flaky([down, down]), DeadStack())


def test_retrain_reads_through_an_orchestrator_restart(monkeypatch):
    # `gold retrain` died when the stack under it restarted: its reads are now retried like eval's
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda _: None)
    down = UnreachableError("ConnectError calling /runs/x")

    class Restarting:
        def __init__(self) -> None:
            self.failures = {"get_run": [down], "dataset_rows": [down, down]}

        def _answer(self, call: str, value):
            if self.failures[call]:
                raise self.failures[call].pop(0)
            return value

        def get_run(self, run_id: str) -> str:
            return self._answer("get_run", run_id)

        def dataset_rows(self, run_id: str) -> list[dict]:
            return self._answer("dataset_rows", [{}])

    client = session.PatientClient(Restarting())  # type: ignore[arg-type]
    assert client.get_run("r") == "r" and client.dataset_rows("r") == [{}]
