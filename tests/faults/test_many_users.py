"""Many users at once through a schedule of faults (tests/faults/many_users.py), bounded: one run per
tenant, one iteration each, a fault 8 s after the last one recovered until each kind has been injected
once (about 3 minutes on 2 cores; 10.5 minutes shared with other work, load average about 10).
bench/soak.py runs the same scenario for longer and reports its figures."""

from __future__ import annotations

import pytest

from tests.faults.many_users import FAULTS, Scenario, run_scenario

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1500)]


def test_two_tenants_and_another_team_through_kills_and_restarts(tmp_path, models_dir):
    report = run_scenario(
        Scenario(data_dir=tmp_path / "gold", models_dir=models_dir, fault_interval_s=8, run_timeout_s=1200)
    )
    figures = report.figures()
    print(figures)  # pytest shows it with -s or on failure: the scenario's own figures

    assert report.fault_errors == []
    assert all(report.faults[kind] >= 1 for kind in FAULTS), report.faults
    # every run finished, with a complete record: nothing duplicated, nothing lost
    assert {r.tenant for r in report.runs} == {"team-a", "team-b"}
    assert [(r.name, r.status, r.error) for r in report.runs if r.status != "succeeded"] == []
    assert [(r.name, r.problems) for r in report.runs if r.problems] == []
    # the other team was answered all along: 2xx, or 429/503 with Retry-After; connections failed
    # only while the generator was down on purpose
    requests = figures["other_team_requests"]
    assert requests["contract_violations"] == []
    assert requests["by_status"].get("200", 0) > 0
    assert not any(status.startswith("5") and status != "503" for status in requests["by_status"])
    # nothing of the stack outlives it, orphans included
    assert report.processes_found >= 6  # the check saw the stack (four services, PostgreSQL, Redis)
    assert report.processes_left == []
