"""`--json` promises the JSON object as the output's last line: scripts read it with `tail -n 1`, stderr
merged or not, so nothing (report path, shutdown) may follow it."""

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gold import cli, session
from shared.schemas.runs import RunSummary
from tests.support import SENTIMENT_TASK, finished_run_read


def finished_run() -> RunSummary:
    run = finished_run_read({"name": "demo", "task": SENTIMENT_TASK}, iteration=1)
    return RunSummary(run=run, iterations=[], sample_counts={})


def test_demo_json_is_the_last_line_after_the_report_and_the_shutdown(monkeypatch):
    summary = finished_run()

    class Client:
        def list_runs(self, status=None, limit=50):  # no interrupted demo to resume
            return []

        def create_run(self, spec, idempotency_key=None):
            return summary.run

        def report(self, run_id, compare):
            return {}

    @contextmanager
    def local_stack(settings, attach, trainers=1):
        yield Client(), None
        session.console.print("stack stopped")

    monkeypatch.setattr(cli, "demo_spec", lambda: {"name": "demo"})
    monkeypatch.setattr(cli, "local_stack", local_stack)
    monkeypatch.setattr(cli, "follow", lambda client, run_id, stack=None: summary)
    monkeypatch.setattr(session, "write_report", lambda report, path: Path("/a/long/" + "x" * 200 + ".html"))
    outcome = CliRunner().invoke(cli.app, ["demo", "--json"])
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.strip().splitlines()
    assert json.loads(lines[-1])["run"]["id"] == str(summary.run.id)
    assert any(line.startswith("report: /a/long/") and line.endswith(".html") for line in lines)


class FinishedRunClient:
    def __init__(self, summary: RunSummary):
        self.summary_ = summary

    def create_run(self, spec, idempotency_key=None):
        return self.summary_.run

    def summary(self, run_id):
        return self.summary_


@pytest.mark.parametrize(
    "args",
    [["submit", "SPEC"], ["submit", "SPEC", "--wait"], ["status", "RUN"]],
    ids=["submit", "submit-wait", "status"],
)
def test_submit_and_status_json_is_the_last_line(args, monkeypatch, tmp_path):
    summary = finished_run()
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"name": "demo", "task": SENTIMENT_TASK}))
    monkeypatch.setattr(cli, "orchestrator_client", lambda settings: FinishedRunClient(summary))
    monkeypatch.setattr(cli, "follow", lambda client, run_id, stack=None: summary)
    args = [str(spec_path) if a == "SPEC" else str(summary.run.id) if a == "RUN" else a for a in args]
    outcome = CliRunner().invoke(cli.app, [*args, "--json"])
    assert outcome.exit_code == 0, outcome.output
    last = json.loads(outcome.output.strip().splitlines()[-1])
    assert str(summary.run.id) in (last.get("id"), last.get("run", {}).get("id"))
