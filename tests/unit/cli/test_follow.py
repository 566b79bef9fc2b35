"""`gold`'s follow loop says what a run waits for while a service it needs is down, and when the
wait is over; as plain lines, so a log (`make demo > log`) shows them too."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from gold import cli, session
from shared.schemas.runs import RunSummary
from tests.support import SENTIMENT_TASK, finished_run_read

SPEC = {"name": "follow", "task": SENTIMENT_TASK}
SINCE = datetime(2026, 1, 5, 12, 3, 4, tzinfo=UTC)
DOWN = "generator: http://127.0.0.1:8001/v1/generate answered 503: the engine is reloading [after it died]"


class Orchestrator:
    """Answers GET /runs/{id} from a script of runs, then the summary of the last one."""

    def __init__(self, *runs):
        self.runs = list(runs)

    def get_run(self, run_id):
        return self.runs.pop(0) if len(self.runs) > 1 else self.runs[0]

    def summary(self, run_id):
        return RunSummary(run=self.runs[0], iterations=[], sample_counts={})


def running(**fields):
    values = {"status": "running", "iteration": 1, "stage": "generate_train", "progress": 0.2}
    return finished_run_read(SPEC, finished_at=None, **(values | fields))


def test_the_waiting_reason_is_shown_once_and_its_end_too(monkeypatch):
    console = Console(record=True, width=300, force_terminal=False)
    monkeypatch.setattr(session, "console", console)
    waiting = running(waiting_for=DOWN, waiting_since=SINCE)
    orchestrator = Orchestrator(
        running(), waiting, waiting, waiting, running(stage="train"), finished_run_read(SPEC)
    )
    summary = session.follow(orchestrator, "run", poll_s=0)  # type: ignore[arg-type]
    assert summary.run.status == "succeeded"
    lines = [line for line in console.export_text().splitlines() if "wait" in line]
    at = SINCE.astimezone().strftime("%H:%M:%S")  # shown in local time
    assert lines == [
        f"iteration 1 · generate_train: waiting for {DOWN} since {at}",  # square brackets kept
        "iteration 1 · train: no longer waiting",
    ]


class Clock:
    """Ten seconds pass between two polls of the run."""

    def __init__(self, orchestrator: Orchestrator):
        self.now = 0.0
        self.orchestrator = orchestrator
        self.get_run = orchestrator.get_run

    def tick(self, run_id):
        self.now += 10.0
        return self.get_run(run_id)

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_a_plain_line_comes_as_each_stage_begins_and_every_30_s(monkeypatch):
    console = Console(record=True, width=300, force_terminal=False)
    monkeypatch.setattr(session, "console", console)

    def scoring(done, progress):
        return running(
            iteration=0,
            stage="teacher_eval",
            stage_progress=f"{done} of 500 rows answered",
            progress=progress,
        )

    orchestrator = Orchestrator(
        scoring(32, 0.0),
        scoring(64, 0.004),
        scoring(96, 0.006),
        scoring(128, 0.008),
        scoring(160, 0.01),
        running(progress=0.2),  # a stage that says nothing of its own progress
        finished_run_read(SPEC),
    )
    clock = Clock(orchestrator)
    monkeypatch.setattr(orchestrator, "get_run", clock.tick)
    summary = session.follow(orchestrator, "run", poll_s=0, clock=clock)  # type: ignore[arg-type]
    assert summary.run.status == "succeeded"
    lines = [line for line in console.export_text().splitlines() if "elapsed" in line]
    assert lines == [
        "iteration 0 · teacher_eval · 32 of 500 rows answered · 0% · 0:00:10 elapsed",
        "iteration 0 · teacher_eval · 128 of 500 rows answered · 1% · 0:00:40 elapsed",
        "iteration 1 · generate_train · 20% · 0:01:00 elapsed",
    ]


def test_a_plain_line_is_due_before_the_next_poll_would_be_past_30_s():
    assert session._line_due(None, "iteration 0 · train", now=0.0, poll_s=2.0)
    assert not session._line_due((0.0, "iteration 0 · train"), "iteration 0 · train", now=27.9, poll_s=2.0)
    assert session._line_due((0.0, "iteration 0 · train"), "iteration 0 · train", now=28.0, poll_s=2.0)
    assert session._line_due((0.0, "iteration 0 · train"), "iteration 1 · train", now=1.0, poll_s=2.0)


def test_status_of_a_running_run_says_how_far_its_step_is_and_what_it_waits_for(capsys):
    run = running(stage_progress="64 of 500 rows answered", waiting_for=DOWN, waiting_since=SINCE)
    cli.show_summary(RunSummary(run=run, iterations=[], sample_counts={}), as_json=False)
    out = capsys.readouterr().out
    assert "iteration 1 · generate_train · 64 of 500 rows answered · 20%" in out
    assert f"waiting for {DOWN} since {SINCE.astimezone():%H:%M:%S}" in " ".join(out.split())


def test_status_of_a_finished_run_shows_no_step(capsys):
    cli.show_summary(RunSummary(run=finished_run_read(SPEC), iterations=[], sample_counts={}), as_json=False)
    assert "waiting" not in capsys.readouterr().out
