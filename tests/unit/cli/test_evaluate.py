import json
import math
import re
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from rich.console import Console
from scipy.stats import t as student_t
from typer.testing import CliRunner

from gold import cli
from gold.evaluation import command
from gold.evaluation.loop_diagnostics import mean_diagnostics, run_diagnostics
from gold.evaluation.mode_results import UnmeasuredRun
from gold.evaluation.mode_specs import budget_spec, mode_spec, parse_modes
from gold.evaluation.overrides import apply_overrides, parse_overrides
from gold.evaluation.plots import sweep_plot
from gold.evaluation.repeats import earlier_result, evaluate, sweep
from gold.evaluation.resumable_runs import canonical_spec, idempotency_key, resumable_run
from gold.evaluation.tables import results_table, sweep_table, tasks_table
from shared.schemas.runs import IterationRead, RunSummary
from shared.spec import RunSpec
from tests.support import SENTIMENT_TASK, finished_run_read

TASK = SENTIMENT_TASK
SPEC = {
    "name": "s",
    "task": TASK,
    "teacher": {"seed": 3},
    "loop": {"iterations": 1},
    "evaluation": {"path": "x", "reference_path": "real.jsonl"},
}


def summary(
    spec, accuracy, teacher=None, supervised=None, metric="accuracy", status="succeeded", run_id=None
) -> RunSummary:
    now = datetime.now(UTC)
    its = [
        IterationRead(
            index=2,
            status="done",
            parse_stats={},
            timings={},
            checkpoint_id=None,
            metrics={f"eval_{metric}": accuracy, "eval_exact_match": 0.0, "student_parameters": 22e6},
            started_at=now,
            finished_at=now,
        )
    ]
    baselines = {}
    if teacher is not None:
        baselines[f"teacher_eval_{metric}"] = teacher
    if supervised is not None:
        baselines.update({f"reference_eval_{metric}": supervised, "reference_examples": 64.0})
    if baselines:
        its.insert(
            0,
            IterationRead(
                index=0,
                status="done",
                parse_stats={},
                timings={},
                checkpoint_id=None,
                metrics=baselines,
                started_at=now,
                finished_at=now,
            ),
        )
    run = finished_run_read(spec, id=run_id or uuid.uuid4(), status=status)
    return RunSummary(run=run, iterations=its, sample_counts={})


def test_mode_spec_switches_feedback_and_shifts_seeds_per_repeat():
    gold = mode_spec(SPEC, "gold", 2, measure_teacher=False)
    vanilla = mode_spec(SPEC, "vanilla", 2, measure_teacher=True)
    assert gold["loop"]["feedback"] is True and vanilla["loop"]["feedback"] is False
    assert gold["teacher"]["seed"] == vanilla["teacher"]["seed"] == 5
    assert gold["student"]["seed"] == 46
    assert (
        vanilla["evaluation"]["teacher_baseline"] is True and gold["evaluation"]["teacher_baseline"] is False
    )
    assert "reference_path" not in gold["evaluation"]  # the supervised reference is not asked for
    assert mode_spec(SPEC, "gold", 0, False, measure_supervised=True)["evaluation"]["reference_path"]
    assert SPEC["loop"] == {"iterations": 1}  # the input is not modified


def test_evaluate_aggregates_repeats_and_measures_the_teacher_once():
    submitted = []

    def run(spec):
        submitted.append(spec)
        gold = spec["loop"]["feedback"]
        return summary(
            spec, 0.8 if gold else 0.7, teacher=0.75 if spec["evaluation"]["teacher_baseline"] else None
        )

    result = evaluate(SPEC, ["gold", "vanilla", "teacher"], 2, run)
    by_mode = {m["mode"]: m for m in result["modes"]}
    assert len(submitted) == 4
    assert sum(s["evaluation"]["teacher_baseline"] for s in submitted) == 1
    assert not any("reference_path" in s["evaluation"] for s in submitted)  # "supervised" not asked
    assert by_mode["gold"]["mean"] == pytest.approx(0.8) and by_mode["gold"]["repeats"] == 2
    assert by_mode["vanilla"]["mean"] == pytest.approx(0.7)
    assert by_mode["teacher"]["values"] == [0.75]
    assert by_mode["gold"]["parameters"] == 22e6


def test_the_headline_is_the_spec_metric_for_students_and_teacher_alike():
    spec = {
        **SPEC,
        "task": {**TASK, "type": "seq2seq", "labels": None},
        "evaluation": {"path": "x", "metric": "rouge_l"},
    }
    result = evaluate(spec, ["gold", "teacher"], 1, lambda s: summary(s, 0.4, teacher=0.3, metric="rouge_l"))
    by_mode = {m["mode"]: m for m in result["modes"]}
    assert by_mode["gold"]["metric"] == by_mode["teacher"]["metric"] == "eval_rouge_l"
    assert by_mode["gold"]["mean"] == 0.4 and by_mode["teacher"]["mean"] == 0.3


def test_parse_modes_rejects_unknown_and_empty():
    with pytest.raises(ValueError, match="unknown"):
        parse_modes("gold,zerogen")
    with pytest.raises(ValueError, match="at least one"):
        parse_modes(" , ")
    assert parse_modes("teacher") == ["teacher"]


def test_baselines_alone_are_measured_by_a_run_that_trains_no_student():
    submitted = []

    def run(spec):
        submitted.append(spec)
        return summary(spec, 0.0, teacher=0.75, supervised=0.6)

    result = evaluate(SPEC, ["teacher", "supervised"], 2, run)
    by_mode = {m["mode"]: m for m in result["modes"]}
    assert [s["loop"]["iterations"] for s in submitted] == [0, 0]
    assert [s["evaluation"]["teacher_baseline"] for s in submitted] == [True, False]
    # the supervised reference trains on as many real examples as the spec would generate (48 + 16)
    assert all(s["evaluation"]["reference_examples"] == 64 for s in submitted)
    assert all(RunSpec.model_validate(s) for s in submitted)
    assert by_mode["teacher"]["values"] == [0.75] and by_mode["supervised"]["repeats"] == 2
    assert result["paired"] is None


def test_a_run_that_trains_no_student_must_measure_a_baseline():
    spec = {**SPEC, "loop": {"iterations": 0}, "evaluation": {"path": "x", "teacher_baseline": False}}
    with pytest.raises(ValueError, match="iterations: 0"):
        RunSpec.model_validate(spec)
    spec["evaluation"] = {"path": "x", "reference_path": "real.jsonl"}
    with pytest.raises(ValueError, match="reference_examples"):
        RunSpec.model_validate(spec)


def test_budget_spec_keeps_iterations_and_ood_share():
    spec = {
        "name": "s",
        "loop": {
            "iterations": 4,
            "samples_per_iteration": 48,
            "ood_samples_per_iteration": 16,
            "feedback_per_iteration": 4,
        },
    }
    scaled = budget_spec(spec, 1024)
    assert scaled["loop"]["samples_per_iteration"] + scaled["loop"]["ood_samples_per_iteration"] == 256
    assert scaled["loop"]["ood_samples_per_iteration"] == 64 and scaled["loop"]["iterations"] == 4
    small = budget_spec(spec, 16)
    assert small["loop"]["ood_samples_per_iteration"] == 1 and small["loop"]["feedback_per_iteration"] == 1


def test_sweep_measures_the_teacher_once_and_plots(tmp_path):
    def run(spec):
        budget = int(spec["name"].split("-b")[1].split("-")[0])
        return summary(
            spec,
            budget / 1000,
            teacher=0.9 if spec["evaluation"]["teacher_baseline"] else None,
            supervised=budget / 500 if "reference_path" in spec["evaluation"] else None,
        )

    result = sweep(SPEC, ["gold", "vanilla", "teacher", "supervised"], 1, [64, 256], run)
    assert [p["budget"] for p in result["points"]] == [64, 256]

    def means(mode):
        return [next(m for m in p["modes"] if m["mode"] == mode)["mean"] for p in result["points"]]

    assert means("gold") == [0.064, 0.256]
    assert means("supervised") == [0.128, 0.512]  # measured at every budget, inside the gold run
    assert sweep_plot(result, tmp_path / "s.png").stat().st_size > 1000


def render(table) -> str:
    console = Console(record=True, width=250)
    console.print(table)
    return console.export_text()


def test_intervals_and_the_paired_difference_follow_the_repeats():
    gold = {0: 0.80, 1: 0.70, 2: 0.90}
    vanilla = {0: 0.70, 1: 0.70, 2: 0.85}

    def run(spec):
        repeat = int(spec["name"].rsplit("-r", 1)[1])
        accuracy = (gold if spec["loop"]["feedback"] else vanilla)[repeat]
        return summary(spec, accuracy, teacher=0.75 if spec["evaluation"]["teacher_baseline"] else None)

    result = evaluate(SPEC, ["gold", "vanilla", "teacher"], 3, run)
    by_mode = {m["mode"]: m for m in result["modes"]}
    values = list(gold.values())
    half = student_t.ppf(0.975, 2) * math.sqrt(sum((v - 0.8) ** 2 for v in values) / 2) / math.sqrt(3)
    assert by_mode["gold"]["ci95"] == pytest.approx([0.8 - half, 0.8 + half])
    assert by_mode["gold"]["value_repeats"] == [0, 1, 2]
    assert by_mode["teacher"]["ci95"] is None and by_mode["teacher"]["std"] is None  # measured once
    paired = result["paired"]
    assert paired["differences"] == pytest.approx([0.1, 0.0, 0.05])
    assert (paired["wins"], paired["ties"], paired["losses"], paired["n"]) == (2, 1, 0, 3)
    assert paired["mean"] == pytest.approx(0.05)
    half = student_t.ppf(0.975, 2) * 0.05 / math.sqrt(3)  # the differences' std is 0.05
    assert paired["ci95"] == pytest.approx([0.05 - half, 0.05 + half])
    assert paired["ci95"][0] < 0 < paired["ci95"][1]  # +5 points, but not outside the noise
    assert "gold ahead in 2 of 3 repeats, tied in 1" in render(results_table(result))
    assert "+0.050 [-0.074, +0.174], ahead in 2 of 3 (1 tied)" in render(tasks_table([result, result]))
    json.dumps(result)


def test_pairs_only_repeats_both_modes_measured_and_one_repeat_has_no_interval():
    def run(spec):
        failed = spec["loop"]["feedback"] and spec["name"].endswith("-r1")
        return summary(spec, 0.6, status="failed" if failed else "succeeded")

    result = evaluate(SPEC, ["gold", "vanilla"], 3, run)
    assert result["paired"]["repeats"] == [0, 2] and result["paired"]["ties"] == 2
    single = evaluate(SPEC, ["gold", "vanilla"], 1, run)
    gold = single["modes"][0]
    assert gold["ci95"] is None and gold["std"] is None and gold["mean"] == 0.6
    assert single["paired"]["n"] == 1 and single["paired"]["ci95"] is None
    assert "one repeat: no interval" in render(results_table(single))
    assert evaluate(SPEC, ["gold", "teacher"], 1, run)["paired"] is None


def test_idempotency_key_is_the_exact_spec():
    spec = mode_spec(SPEC, "gold", 0, measure_teacher=True)
    reordered = json.loads(json.dumps(spec, sort_keys=True))
    reordered = {key: reordered[key] for key in reversed(list(reordered))}
    key = idempotency_key(spec)
    assert key == idempotency_key(reordered) and key.startswith("gold-eval-") and len(key) == 42
    others = [
        mode_spec(SPEC, "vanilla", 0, measure_teacher=True),
        mode_spec(SPEC, "gold", 1, measure_teacher=True),
        mode_spec(budget_spec(SPEC, 64), "gold", 0, measure_teacher=True),
        mode_spec(budget_spec(SPEC, 256), "gold", 0, measure_teacher=True),
        mode_spec({**SPEC, "loop": {"iterations": 2}}, "gold", 0, measure_teacher=True),
        mode_spec(apply_overrides(SPEC, {"loop.feedback_per_iteration": 8}), "gold", 0, True),
    ]
    keys = {idempotency_key(other) for other in others}
    assert key not in keys and len(keys) == len(others)


def test_idempotency_key_includes_the_defaults_a_spec_runs_under():
    # keyed on the complete spec, defaults filled in: a spec that spells a default out is the same
    # measurement, and a run made under an older default is not reused once the default changes
    spec = mode_spec(SPEC, "gold", 0, measure_teacher=True)
    complete = RunSpec.model_validate(spec).model_dump(mode="json")
    assert complete["verification"]["policy"] == "relabel" and "verification" not in spec
    assert idempotency_key(spec) == idempotency_key(complete)
    assert idempotency_key(spec) != idempotency_key({**spec, "verification": {"policy": "off"}})


def test_idempotency_key_leaves_unset_fields_out():
    # a new optional field (None by default) must not change the key of runs made before it existed
    spec = mode_spec(SPEC, "gold", 0, measure_teacher=True)
    assert RunSpec.model_validate(spec).student.final_learning_rate is None
    assert "final_learning_rate" not in canonical_spec(spec) and "null" not in canonical_spec(spec)
    chosen = apply_overrides(spec, {"student.final_learning_rate": 1e-4})
    assert '"final_learning_rate":0.0001' in canonical_spec(chosen)
    assert idempotency_key(chosen) != idempotency_key(spec)


class FakeOrchestrator:
    """Keeps runs by Idempotency-Key as the orchestrator does in Postgres; a run executes when
    followed, with the accuracy `outcome(spec)` gives (None: it fails)."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.runs: dict[str, RunSummary] = {}
        self.keys: dict[str, str] = {}
        self.created: list[str] = []  # keys of the runs created
        self.followed: list[str] = []
        self.kill_at: int | None = None  # the follow call that is interrupted (the eval killed)

    def create_run(self, spec, idempotency_key=None):
        if idempotency_key in self.keys:
            return self.runs[self.keys[idempotency_key]].run
        queued = summary(spec, 0.0, status="queued")
        self.runs[str(queued.run.id)] = queued
        self.keys[idempotency_key] = str(queued.run.id)
        self.created.append(idempotency_key)
        return queued.run

    def summary(self, run_id):
        return self.runs[run_id]

    def follow(self, run_id):
        self.followed.append(run_id)
        spec = self.runs[run_id].run.spec
        if len(self.followed) == self.kill_at:
            self.runs[run_id] = summary(spec, 0.0, status="running", run_id=uuid.UUID(run_id))
            raise KeyboardInterrupt
        accuracy = self.outcome(spec)
        self.runs[run_id] = summary(
            spec,
            accuracy or 0.0,
            teacher=0.75 if spec["evaluation"]["teacher_baseline"] else None,
            status="failed" if accuracy is None else "succeeded",
            run_id=uuid.UUID(run_id),
        )
        return self.runs[run_id]


def by_feedback(spec):
    return 0.8 if spec["loop"]["feedback"] else 0.7


def test_a_killed_eval_resumes_from_the_finished_runs():
    orchestrator, said = FakeOrchestrator(by_feedback), []

    def run(spec):
        return resumable_run(spec, orchestrator, orchestrator.follow, said.append)

    orchestrator.kill_at = 3  # killed during gold repeat 1, after gold and vanilla of repeat 0
    with pytest.raises(KeyboardInterrupt):
        evaluate(SPEC, ["gold", "vanilla", "teacher"], 2, run)
    orchestrator.kill_at = None
    said.clear()
    result = evaluate(SPEC, ["gold", "vanilla", "teacher"], 2, run)
    assert len(orchestrator.created) == 4  # every run created once, across both invocations
    assert sum(line.startswith("reusing run") for line in said) == 2
    assert len(orchestrator.followed) == 5  # the interrupted run is followed again, not resubmitted
    by_mode = {m["mode"]: m for m in result["modes"]}
    assert by_mode["gold"]["values"] == [0.8, 0.8] and by_mode["teacher"]["values"] == [0.75]
    assert result["paired"]["wins"] == 2
    again = evaluate(SPEC, ["gold", "vanilla", "teacher"], 2, run)  # all finished: nothing runs
    assert len(orchestrator.followed) == 5 and again["modes"] == result["modes"]


def test_a_failed_run_is_retried_under_a_suffixed_key():
    attempts = []

    def outcome(spec):
        attempts.append(spec["name"])
        return None if len(attempts) == 1 else 0.8

    orchestrator, said = FakeOrchestrator(outcome), []
    spec = mode_spec(SPEC, "gold", 0, measure_teacher=False)
    done = resumable_run(spec, orchestrator, orchestrator.follow, said.append)
    key = idempotency_key(spec)
    assert done.run.status == "succeeded" and orchestrator.created == [key, f"{key}-retry1"]
    # A re-run skips the failed run and reuses its finished retry.
    again = resumable_run(spec, orchestrator, orchestrator.follow, said.append)
    assert again.run.id == done.run.id and said[-1].startswith(f"reusing run {done.run.id}")
    assert len(orchestrator.followed) == 2


def test_a_run_that_failed_in_an_earlier_call_is_tried_again_when_the_command_is_rerun():
    failing = True
    orchestrator, said = FakeOrchestrator(lambda spec: None if failing else 0.8), []
    spec = mode_spec(SPEC, "gold", 0, measure_teacher=False)
    key = idempotency_key(spec)
    first = resumable_run(spec, orchestrator, orchestrator.follow, said.append)
    assert first.run.status == "failed" and orchestrator.created == [key, f"{key}-retry1"]
    failing = False  # say, the machine had run out of memory
    second = resumable_run(spec, orchestrator, orchestrator.follow, said.append)
    assert second.run.status == "succeeded" and orchestrator.created[-1] == f"{key}-retry2"
    assert len(orchestrator.created) == 3

    # a run that always fails: two new attempts per call, six in all, then its last failure
    always_failing, said = FakeOrchestrator(lambda spec: None), []
    for _ in range(4):
        failed = resumable_run(spec, always_failing, always_failing.follow, said.append)
        assert failed.run.status == "failed"
    assert len(always_failing.created) == len(always_failing.followed) == 6


def test_overrides_are_yaml_on_dotted_paths_and_rename_the_spec():
    overrides = parse_overrides(
        ["loop.selection_band=[0.2,0.5]", "loop.feedback_per_iteration=8", "verification.policy=relabel"]
    )
    assert overrides == {
        "loop.selection_band": [0.2, 0.5],
        "loop.feedback_per_iteration": 8,
        "verification.policy": "relabel",
    }
    changed = apply_overrides(SPEC, overrides)
    assert changed["loop"] == {"iterations": 1, "selection_band": [0.2, 0.5], "feedback_per_iteration": 8}
    assert changed["verification"] == {"policy": "relabel"}  # a section the spec left out is created
    # Long descriptions are cut and told apart by a hash of all the overrides.
    assert changed["name"].startswith("s-selection_band=0.2_0.5-feedback_per_it")
    assert len(changed["name"]) <= len("s-") + 48
    other = apply_overrides(SPEC, {**overrides, "verification.policy": "drop"})
    assert other["name"] != changed["name"]
    assert apply_overrides(SPEC, {"loop.feedback_per_iteration": 8})["name"] == "s-feedback_per_iteration=8"
    assert SPEC["loop"] == {"iterations": 1} and apply_overrides(SPEC, {}) is SPEC


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("lop.iterations=2", "--set lop.iterations: unknown section 'lop'"),
        ("loop.selction_band=[0.2,0.5]", "--set loop.selction_band: loop has no field 'selction_band'"),
        ("task.labels.first=x", "--set task.labels.first: task.labels is a list, not a mapping"),
        (
            "loop.selection_band=[0.6,0.5]",
            "--set: the spec with these overrides is not valid: loop.selection",
        ),
        ("loop.iterations", "expected SECTION.KEY=VALUE"),
        ("name=x", "cannot be set"),
        ("loop.iterations=[1,", "not YAML"),
    ],
)
def test_bad_overrides_are_errors_naming_the_option(option, message):
    with pytest.raises(ValueError, match="--set") as error:
        apply_overrides(SPEC, parse_overrides([option]))
    assert message in str(error.value)


def test_sweep_tables_and_plots_intervals_and_the_paired_difference(tmp_path):
    def run(spec):
        repeat = int(spec["name"].rsplit("-r", 1)[1])
        return summary(spec, 0.5 + 0.1 * spec["loop"]["feedback"] + 0.01 * repeat)

    result = sweep(SPEC, ["gold", "vanilla"], 2, [64, 128], run)
    text = render(sweep_table(result))
    assert "0.605 [0.541, 0.669]" in text and "+0.100 [+0.100, +0.100], ahead in 2 of 2" in text
    assert sweep_plot(result, tmp_path / "s.png").stat().st_size > 1000


def test_a_sweep_tells_its_partial_result_after_each_run():
    def run(spec):
        return summary(spec, 0.5 + 0.1 * spec["loop"]["feedback"])

    told: list[dict] = []
    result = sweep(SPEC, ["gold", "vanilla"], 2, [64, 128], run, told.append)
    assert len(told) == 8 and told[-1] == result  # 2 budgets x 2 repeats x 2 modes
    fifth = told[4]  # budget 64 done, budget 128's first run (gold, repeat 0)
    assert [p["budget"] for p in fifth["points"]] == [64, 128]
    assert fifth["points"][0] == result["points"][0]
    assert [m["values"] for m in fifth["points"][1]["modes"]] == [[0.6], []]
    assert fifth["points"][1]["paired"]["n"] == 0


def on_stack(monkeypatch, orchestrator: FakeOrchestrator) -> None:
    """`gold eval` runs on `orchestrator` instead of a stack it starts; no report is written."""

    @contextmanager
    def local_stack(settings, attach, trainers=1):
        yield orchestrator, None

    monkeypatch.setattr(command, "local_stack", local_stack)
    monkeypatch.setattr(command, "follow", lambda client, run_id, stack=None: orchestrator.follow(run_id))
    monkeypatch.setattr(command, "save_report", lambda *args, **kwargs: None)


def test_a_stopped_eval_leaves_the_runs_it_finished_in_its_result_file(tmp_path, monkeypatch):
    orchestrator = FakeOrchestrator(by_feedback)
    orchestrator.kill_at = 4  # stopped while vanilla's repeat 1 runs
    spec_path = tmp_path / "s.json"
    spec_path.write_text(json.dumps(SPEC))

    on_stack(monkeypatch, orchestrator)
    out = tmp_path / "r.json"
    args = ["eval", str(spec_path), "--modes", "gold,vanilla", "--repeats", "2", "--out", str(out)]
    outcome = CliRunner().invoke(cli.app, args)
    assert outcome.exit_code != 0
    written = json.loads(out.read_text())
    assert written["partial"] is True
    assert [m["values"] for m in written["modes"]] == [[0.8, 0.8], [0.7]]
    assert written["paired"]["n"] == 1 and [p.name for p in tmp_path.iterdir()] == ["s.json", "r.json"]
    orchestrator.kill_at = None
    assert CliRunner().invoke(cli.app, args).exit_code == 0  # run again: finished, the file whole
    assert "partial" not in json.loads(out.read_text())


def test_eval_writes_the_result_file_and_ends_stdout_with_the_json(tmp_path, monkeypatch):
    orchestrator = FakeOrchestrator(by_feedback)
    spec_path = tmp_path / "s.json"
    spec_path.write_text(json.dumps(SPEC))

    on_stack(monkeypatch, orchestrator)
    args = ["eval", str(spec_path), "--modes", "gold,vanilla", "--repeats", "2", "--json"]
    args += ["--set", "loop.selection_band=[0.2, 0.5]", "--out", str(tmp_path / "out" / "r.json")]
    monkeypatch.setattr("sys.argv", ["/somewhere/.venv/bin/gold", *args])
    outcome = CliRunner().invoke(cli.app, args)
    assert outcome.exit_code == 0, outcome.output
    printed = json.loads(outcome.stdout.strip().splitlines()[-1])
    written = json.loads((tmp_path / "out" / "r.json").read_text())
    assert printed == written
    assert written["command"].startswith(f"gold eval {spec_path} --modes gold,vanilla --repeats 2")
    assert written["command"].endswith(
        "--set 'loop.selection_band=[0.2, 0.5]' --out " + str(tmp_path / "out" / "r.json")
    )
    assert datetime.fromisoformat(written["measured_at"]).tzinfo is not None
    assert written["overrides"] == {"loop.selection_band": [0.2, 0.5]}
    assert written["spec"] == "s-selection_band=0.2_0.5" and written["paired"]["wins"] == 2
    assert len(orchestrator.created) == 4
    rerun = CliRunner().invoke(cli.app, args)  # everything finished: reused, nothing created
    assert rerun.exit_code == 0 and len(orchestrator.created) == 4
    assert rerun.stderr.count("reusing run") == 4


def test_baselines_reported_by_every_run_are_still_read_once():
    # With the orchestrator's teacher-baseline cache a run may report the teacher however it is
    # asked; the table takes the teacher from the run that asked for it, and the students' figures
    # and the paired difference do not change.
    def run(spec):
        return summary(spec, by_feedback(spec), teacher=0.75, supervised=0.9)

    result = evaluate(SPEC, ["gold", "vanilla", "teacher"], 3, run)
    by_mode = {m["mode"]: m for m in result["modes"]}
    assert by_mode["teacher"]["values"] == [0.75] and by_mode["teacher"]["ci95"] is None
    assert by_mode["gold"]["values"] == [0.8] * 3 and result["paired"]["wins"] == 3
    assert "supervised" not in by_mode


def test_diagnostics_follow_the_loop_and_average_over_repeats():
    def looped(values: list[dict[str, float]]) -> RunSummary:
        base = summary({**SPEC, "loop": {"iterations": 2}}, 0.7)
        now = datetime.now(UTC)
        loop = [
            IterationRead(
                index=i,
                status="done",
                parse_stats={},
                timings={},
                checkpoint_id=None,
                metrics=m,
                started_at=now,
                finished_at=now,
            )  # fmt: skip
            for i, m in enumerate(values, start=1)
        ]
        return base.model_copy(update={"iterations": loop})

    first = run_diagnostics(
        looped(
            [
                {"eval_accuracy": 0.6, "pool_spread": 0.5, "ood_novelty": 0.3, "feedback_relabelled": 1.0},
                {"eval_accuracy": 0.7, "pool_spread": 0.6, "ood_novelty": 0.5, "feedback_relabelled": 2.0},
            ]
        ),
        "eval_accuracy",
    )
    # the curve is the loop's (not the final student's), the pool is read at the end, novelty is a
    # mean over iterations and feedback counts add up
    assert first.pop("curve") == [0.6, 0.7]
    assert first == pytest.approx({"pool_spread": 0.6, "ood_novelty": 0.4, "feedback_relabelled": 3.0})
    mean = mean_diagnostics([{**first, "curve": [0.6, 0.7]}, {"curve": [0.8], "pool_spread": 0.4}])
    assert mean.pop("curve") == pytest.approx([0.7, 0.7])
    assert mean == pytest.approx({"pool_spread": 0.5, "ood_novelty": 0.4, "feedback_relabelled": 3.0})


def test_the_student_before_distillation_is_measured_once_in_the_first_run():
    spec = {**SPEC, "task": {**TASK, "type": "seq2seq", "labels": None}, "evaluation": {"path": "x"}}
    submitted = []

    def run(s):
        submitted.append(s)
        result = summary(s, 0.4, metric="f1")
        if s["evaluation"].get("student_baseline"):
            baseline = result.iterations[0].model_copy(
                update={"index": 0, "metrics": {"fewshot_eval_f1": 0.2, "fewshot_student_parameters": 1.3e8}}
            )
            result = result.model_copy(update={"iterations": [baseline, *result.iterations]})
        return result

    result = evaluate(spec, ["gold", "vanilla", "student"], 2, run)
    by_mode = {m["mode"]: m for m in result["modes"]}
    assert [bool(s["evaluation"].get("student_baseline")) for s in submitted] == [True, False, False, False]
    assert by_mode["student"]["values"] == [0.2] and by_mode["student"]["metric"] == "eval_f1"
    assert by_mode["student"]["parameters"] == 1.3e8
    assert by_mode["gold"]["mean"] == pytest.approx(0.4)


def by_feedback_and_seed(spec):
    """Repeats differ (the student seed moves with the repeat), gold 0.05 ahead in each."""
    return by_feedback(spec) + 0.01 * (spec["student"]["seed"] % 10)


class FakeRun:
    """`evaluate`'s `run`: records the specs submitted; each run has one loop iteration whose
    curve point and pool spread follow the outcome, so diagnostics differ between repeats."""

    def __init__(self, outcome):
        self.outcome, self.submitted = outcome, []

    def __call__(self, spec):
        self.submitted.append(spec)
        value = self.outcome(spec)
        result = summary(spec, value, teacher=0.75 if spec["evaluation"]["teacher_baseline"] else None)
        loop = result.iterations[-1].model_copy(
            update={"index": 1, "metrics": {"eval_accuracy": value - 0.1, "pool_spread": value / 2}}
        )
        return result.model_copy(update={"iterations": [*result.iterations, loop]})


def test_a_results_file_stands_in_for_its_repeats_and_only_the_others_run():
    first = evaluate(SPEC, ["gold", "vanilla", "teacher"], 2, FakeRun(by_feedback_and_seed))
    again = FakeRun(by_feedback_and_seed)  # a new stack: the first call's runs are not in it
    result = evaluate(SPEC, ["gold", "vanilla", "teacher"], 3, again, earlier_result(first, "s", {}, 3))
    assert [s["name"] for s in again.submitted] == ["s-gold-r2", "s-vanilla-r2"]
    assert not any(s["evaluation"]["teacher_baseline"] for s in again.submitted)  # measured before
    whole = evaluate(SPEC, ["gold", "vanilla", "teacher"], 3, FakeRun(by_feedback_and_seed))
    for row, expected in zip(result["modes"], whole["modes"], strict=True):
        assert (
            row["values"] == pytest.approx(expected["values"])
            and row["value_repeats"] == [0, 1, 2][: len(row["values"])]
        )
        assert row["diagnostics_by_repeat"] == expected["diagnostics_by_repeat"]
        assert row["diagnostics"] == expected["diagnostics"]
    assert result["paired"]["n"] == 3 and result["paired"]["mean"] == pytest.approx(0.1)
    assert len(result["modes"][0]["run_ids"]) == 3  # the earlier runs' ids are kept beside the new one


def test_a_file_without_diagnostics_by_repeat_counts_its_mean_once_per_value():
    first = evaluate(SPEC, ["gold", "vanilla"], 2, FakeRun(by_feedback_and_seed))
    for row in first["modes"]:
        del row["diagnostics_by_repeat"]  # as files written before it was kept
    result = evaluate(
        SPEC, ["gold", "vanilla"], 3, FakeRun(by_feedback_and_seed), earlier_result(first, "s", {}, 3)
    )
    whole = evaluate(SPEC, ["gold", "vanilla"], 3, FakeRun(by_feedback_and_seed))
    resumed, expected = result["modes"][0]["diagnostics"], whole["modes"][0]["diagnostics"]
    assert resumed["pool_spread"] == pytest.approx(expected["pool_spread"])
    assert resumed["curve"] == pytest.approx(expected["curve"])


@pytest.mark.parametrize(
    ("name", "overrides", "repeats", "message"),
    [
        ("other", {}, 3, "no result for spec 'other'"),
        ("s", {"loop.feedback_per_iteration": 4}, 3, "overrides {} differ"),
        ("s", {}, 1, "repeat(s) [1], beyond --repeats 1"),
    ],
)
def test_a_results_file_from_another_evaluation_is_refused_saying_what_differs(
    name, overrides, repeats, message
):
    first = {**evaluate(SPEC, ["gold", "vanilla"], 2, FakeRun(by_feedback)), "overrides": {}}
    with pytest.raises(ValueError, match=re.escape(message)):
        earlier_result(first, name, overrides, repeats)


def test_eval_resume_from_runs_only_the_missing_repeats_and_reports_a_run_of_this_call(tmp_path, monkeypatch):
    spec_path, out = tmp_path / "s.json", tmp_path / "r.json"
    spec_path.write_text(json.dumps(SPEC))
    orchestrator, reported = FakeOrchestrator(by_feedback_and_seed), []

    @contextmanager
    def local_stack(settings, attach, trainers=1):
        yield orchestrator, None

    monkeypatch.setattr(command, "local_stack", local_stack)
    monkeypatch.setattr(command, "follow", lambda client, run_id, stack=None: orchestrator.follow(run_id))

    def save_report(client, settings, run_id, compare):
        reported.append(run_id)

    monkeypatch.setattr(command, "save_report", save_report)
    args = ["eval", str(spec_path), "--modes", "gold,vanilla", "--out", str(out)]
    assert CliRunner().invoke(cli.app, [*args, "--repeats", "2"]).exit_code == 0
    orchestrator = FakeOrchestrator(by_feedback_and_seed)  # the database is gone
    outcome = CliRunner().invoke(cli.app, [*args, "--repeats", "3", "--resume-from", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert len(orchestrator.created) == 2  # gold and vanilla of repeat 2
    written = json.loads(out.read_text())
    assert written["repeats"] == 3 and written["paired"]["n"] == 3
    assert reported[-1] in orchestrator.runs  # the report is of a run this stack has
    refused = CliRunner().invoke(cli.app, [*args, "--repeats", "2", "--resume-from", str(out)])
    assert refused.exit_code == 1 and "beyond --repeats 2" in refused.stderr


def test_a_succeeded_run_without_its_real_data_score_stops_the_evaluation_naming_it():
    """Left out silently, the repeat would leave gold and vanilla unpaired and the statistics biased."""

    def run(spec):
        if spec["loop"]["feedback"]:  # gold's student was not measured: no eval_accuracy
            return summary(spec, 0.8, metric="f1", run_id=uuid.UUID(int=7))
        return summary(spec, 0.7)

    with pytest.raises(UnmeasuredRun, match=f"run {uuid.UUID(int=7)} .*succeeded .* no eval_accuracy"):
        evaluate(SPEC, ["gold", "vanilla"], 1, run)
