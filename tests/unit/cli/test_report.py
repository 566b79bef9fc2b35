"""`gold status` / `gold demo` tables: where the time went."""

from datetime import UTC, datetime, timedelta

from rich.console import Console

from gold.report import STAGE_GROUPS, time_split, time_split_table
from shared.names import Stage
from shared.schemas.runs import IterationRead, RunSummary
from tests.support import SENTIMENT_TASK, finished_run_read


def _summary(timings: dict[int, dict[str, float]], wall_s: float) -> RunSummary:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    spec = {"name": "t", "task": SENTIMENT_TASK, "verification": {"policy": "relabel"}}
    run = finished_run_read(
        spec, created_at=start, started_at=start, finished_at=start + timedelta(seconds=wall_s)
    )
    iterations = [
        IterationRead(
            index=index,
            status="done",
            parse_stats={},
            timings=stages,
            checkpoint_id=None,
            started_at=start,
            finished_at=start,
        )
        for index, stages in timings.items()
    ]
    return RunSummary(run=run, iterations=iterations, sample_counts={})


def test_every_stage_is_counted_in_one_part():
    grouped = [stage for stages in STAGE_GROUPS.values() for stage in stages]
    assert sorted(grouped) == sorted(Stage)


def test_verification_has_its_row_and_is_not_counted_as_other():
    timings = {
        1: {Stage.GENERATE_TRAIN: 10.0, Stage.VERIFY: 20.0, Stage.TRAIN: 30.0},
        2: {Stage.GENERATE_TRAIN: 10.0, Stage.VERIFY: 20.0, Stage.TRAIN: 30.0},
    }
    summary = _summary(timings, wall_s=125.0)
    split = time_split(summary)
    assert split["teacher verification"] == 40.0
    assert split["generation"] == 20.0 and split["training"] == 60.0
    assert split["other"] == 5.0 and split["total"] == 125.0
    console = Console(width=100, record=True)
    console.print(time_split_table(summary))
    rows = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if "│" in line}
    assert "40" in rows["teacher verification"] and "32%" in rows["teacher verification"]
