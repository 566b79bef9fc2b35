"""`gold eval`: the same spec as GOLD (feedback on), vanilla (feedback off, same budget and seeds),
the teacher answering few-shot, the student before distillation answering few-shot from the same
seed examples (causal students) and, when the spec names a labelled training file
(evaluation.reference_path), the supervised reference (the student trained on as many real labelled
examples as the run generates), measured on the spec's real evaluation data.

Every run is submitted with an Idempotency-Key derived from its exact spec, so a killed `gold eval`
re-run with the same arguments picks up the runs already finished (or still going) in Postgres.
A results file written earlier can stand in for those runs (`--resume-from`): the repeats it holds
are kept and only the others are run, so more repeats can be added on a stack that no longer has
the first ones (a new machine, a dropped database)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ValidationError
from rich.table import Table
from scipy.stats import t

from shared.diagnostics import diagnostic, diagnostic_series
from shared.names import (
    EVAL_PREFIX,
    EVAL_SECONDS_PER_EXAMPLE,
    REFERENCE_EXAMPLES,
    STUDENT_PARAMETERS,
    TEACHER_PARAMETERS,
    TEACHER_SECONDS_PER_EXAMPLE,
    TERMINAL_RUN_STATUSES,
    Diagnostic,
    RunStatus,
    eval_metric,
    fewshot_metric,
    reference_metric,
    teacher_eval_metric,
)
from shared.schemas.runs import RunRead, RunSummary
from shared.spec import LoopSpec, RunSpec, StudentSpec, TeacherSpec, stored_spec

MODES = ("gold", "vanilla", "teacher", "student", "supervised")
STUDENT_MODES = ("gold", "vanilla")


@dataclass(frozen=True)
class BaselineMetrics:
    """Where a baseline measured inside the first student run (iteration 0) is stored."""

    headline: Callable[[str], str]  # of the task metric: accuracy -> teacher_eval_accuracy
    parameters: str
    seconds_per_example: str
    examples: str | None  # real examples trained on


BASELINE_METRICS = {
    "teacher": BaselineMetrics(teacher_eval_metric, TEACHER_PARAMETERS, TEACHER_SECONDS_PER_EXAMPLE, None),
    "student": BaselineMetrics(
        lambda task_metric: fewshot_metric(eval_metric(task_metric)),
        fewshot_metric(STUDENT_PARAMETERS),
        fewshot_metric(EVAL_SECONDS_PER_EXAMPLE),
        None,
    ),
    "supervised": BaselineMetrics(
        lambda task_metric: reference_metric(eval_metric(task_metric)),
        reference_metric(STUDENT_PARAMETERS),
        reference_metric(EVAL_SECONDS_PER_EXAMPLE),
        REFERENCE_EXAMPLES,
    ),
}


def _default(model: type[BaseModel], name: str) -> Any:
    """A spec field's default, read from shared/spec.py (a spec dict leaves defaults out)."""
    return model.model_fields[name].default


# A failed or cancelled run is tried again under its own key: twice per `gold eval` call, and up
# to MAX_ATTEMPTS over the calls (a machine running out of memory fails runs that are fine).
RETRIES_PER_CALL = 2
MAX_ATTEMPTS = 6


def t_interval(values: list[float]) -> list[float] | None:
    """The 95% Student t interval of the mean; None under two values (no spread to measure)."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return [mean - half, mean + half]


def parse_modes(raw: str) -> list[str]:
    modes = [m.strip() for m in raw.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"--modes: unknown mode(s) {unknown}; choose from {list(MODES)}")
    if not modes:
        raise ValueError(f"--modes: name at least one of {list(MODES)}")
    return modes


def mode_spec(
    spec: dict[str, Any],
    mode: str,
    repeat: int,
    measure_teacher: bool,
    measure_supervised: bool = False,
    measure_student: bool = False,
) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["name"] = f"{spec['name']}-{mode}-r{repeat}"
    out.setdefault("loop", {})["feedback"] = mode == "gold"
    for part, model in (("teacher", TeacherSpec), ("student", StudentSpec)):
        section = out.setdefault(part, {})
        section["seed"] = int(section.get("seed", _default(model, "seed"))) + repeat
    if out.get("evaluation"):
        out["evaluation"]["teacher_baseline"] = measure_teacher
        if measure_student:
            out["evaluation"]["student_baseline"] = True
        if not measure_supervised:
            out["evaluation"].pop("reference_path", None)
            out["evaluation"].pop("reference_split", None)
            out["evaluation"].pop("reference_examples", None)
    return out


def budget_spec(spec: dict[str, Any], budget: int) -> dict[str, Any]:
    """The spec with its generation budget (samples over all iterations) set to `budget`, keeping
    the iteration count and the share of OOD samples."""
    out = copy.deepcopy(spec)
    loop = out.setdefault("loop", {})
    iterations = int(loop.get("iterations", _default(LoopSpec, "iterations")))
    train = int(loop.get("samples_per_iteration", _default(LoopSpec, "samples_per_iteration")))
    ood = int(loop.get("ood_samples_per_iteration", _default(LoopSpec, "ood_samples_per_iteration")))
    per_iteration = max(budget // iterations, 2)
    ood_share = ood / (train + ood) if train + ood else 0.0
    loop["ood_samples_per_iteration"] = max(int(round(per_iteration * ood_share)), 1 if ood else 0)
    loop["samples_per_iteration"] = per_iteration - loop["ood_samples_per_iteration"]
    loop["feedback_per_iteration"] = min(
        int(loop.get("feedback_per_iteration", _default(LoopSpec, "feedback_per_iteration"))),
        loop["ood_samples_per_iteration"],
    )
    out["name"] = f"{spec['name']}-b{budget}"
    return out


def parse_overrides(raw: list[str]) -> dict[str, Any]:
    """`--set loop.selection_band=[0.2,0.5]` options as {dotted path: value}; the value is YAML."""
    overrides: dict[str, Any] = {}
    for item in raw:
        path, sep, value = item.partition("=")
        path = path.strip()
        if not sep or not path or any(not part for part in path.split(".")):
            raise ValueError(
                f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. loop.selection_band=[0.2,0.5]"
            )
        try:
            overrides[path] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not YAML ({exc})") from exc
    return overrides


def _model_fields(annotation: Any) -> dict[str, Any] | None:
    """The fields of a pydantic model annotation (`X | None` included); None for anything else."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate.model_fields
    return None


def apply_overrides(spec: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The spec with each dotted path set, named apart (`sst2-selection_band=0.2_0.5`), checked
    against the spec schema so a typo fails here rather than after the stack has started."""
    if not overrides:
        return spec
    out = copy.deepcopy(spec)
    for path, value in overrides.items():
        keys = path.split(".")
        if keys[0] == "name":
            raise ValueError(f"--set {path}: the name is derived from the overrides; it cannot be set")
        if keys[0] not in RunSpec.model_fields:
            known = sorted(set(RunSpec.model_fields) - {"name"})
            raise ValueError(f"--set {path}: unknown section {keys[0]!r}; choose from {known}")
        node, fields = out, RunSpec.model_fields
        for depth, key in enumerate(keys):
            if fields is not None and key not in fields:
                where = ".".join(keys[:depth])
                raise ValueError(f"--set {path}: {where} has no field {key!r}; it has {sorted(fields)}")
            if depth == len(keys) - 1:
                node[key] = value
                break
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ValueError(f"--set {path}: {where} is a {type(child).__name__}, not a mapping")
            node, fields = child, _model_fields(fields[key].annotation) if fields is not None else None
    out["name"] = f"{spec['name']}-{override_suffix(overrides)}"
    try:
        RunSpec.model_validate(out)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"--set: the spec with these overrides is not valid: {problems}") from exc
    return out


def override_suffix(overrides: dict[str, Any]) -> str:
    """A short, file-name-safe description of the overrides: each leaf key and its value, cut
    and completed by a hash of them all when that would be long (the result JSON lists them)."""
    parts = []
    for path, value in overrides.items():
        shown = re.sub(r"[^A-Za-z0-9.+-]+", "_", json.dumps(value)).strip("_")
        parts.append(f"{path.rsplit('.', 1)[-1]}={shown}")
    suffix = "-".join(parts)
    if len(suffix) > 48:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
        suffix = f"{suffix[:39].rstrip('-_=.')}-{digest}"
    return suffix


def idempotency_key(spec: dict[str, Any]) -> str:
    """The key a mode spec is submitted under: a hash of its canonical JSON with every default
    filled in, which encodes the mode, the repeat's seeds, the budget, any override and the
    defaults it ran under, so the same submission finds its run and a changed default does not.
    Unset (None) fields are left out: a new optional field, None by default, leaves every earlier
    key as it was, so adding one does not orphan the finished runs of an evaluation."""
    return f"gold-eval-{hashlib.sha256(canonical_spec(spec).encode()).hexdigest()[:32]}"


def canonical_spec(spec: dict[str, Any]) -> str:
    complete = RunSpec.model_validate(spec).model_dump(mode="json", exclude_none=True)
    return json.dumps(complete, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class RunClient(Protocol):
    def create_run(self, spec: dict[str, Any], idempotency_key: str | None = None) -> RunRead: ...

    def summary(self, run_id: str) -> RunSummary: ...


def resumable_run(
    spec: dict[str, Any],
    client: RunClient,
    follow: Callable[[str], RunSummary],
    say: Callable[[str], None],
) -> RunSummary:
    """Submit `spec` under its idempotency key and return the run's summary: a finished run is
    reused at once, an active one (say, after a restart) is followed, and a failed or cancelled
    one is retried under the next suffixed key (`-retry1`, ...), at most RETRIES_PER_CALL new
    attempts per call: so running a command again also retries what failed in an earlier one."""
    key = idempotency_key(spec)
    summary: RunSummary | None = None
    fresh = 0
    for attempt in range(MAX_ATTEMPTS):
        run = client.create_run(spec, key + (f"-retry{attempt}" if attempt else ""))
        if run.status == RunStatus.SUCCEEDED:
            say(f"reusing run {run.id}: {spec['name']} (finished)")
            return client.summary(str(run.id))
        if run.status in TERMINAL_RUN_STATUSES:  # an earlier call's attempt
            say(f"run {run.id}: {spec['name']} {run.status} earlier")
            summary = None
            continue
        say(f"run {run.id}: {spec['name']}" + ("" if run.status == RunStatus.QUEUED else f" ({run.status})"))
        summary = follow(str(run.id))
        if summary.run.status == RunStatus.SUCCEEDED:
            return summary
        fresh += 1
        if fresh == RETRIES_PER_CALL:
            break
        say(f"run {run.id}: {spec['name']} {summary.run.status}; retrying it")
    if summary is None:  # every attempt failed in earlier calls
        summary = client.summary(str(run.id))
    return summary


def final_metrics(summary: RunSummary) -> dict[str, float]:
    """The metrics of the run's last student (the final one when there is one)."""
    trained = [it for it in summary.iterations if it.index >= 1 and it.metrics]
    return max(trained, key=lambda it: it.index).metrics if trained else {}


# What a student run shows besides its headline: the loop's data and feedback, averaged over repeats.
# Pool metrics are read at the last loop iteration (the whole pool); the others are per-iteration means.
POOL_DIAGNOSTICS = (Diagnostic.POOL_SPREAD, Diagnostic.POOL_COVERAGE, Diagnostic.NEAREST_NEIGHBOUR_SIMILARITY)
MEAN_DIAGNOSTICS = (
    Diagnostic.OOD_NOVELTY,
    Diagnostic.TRAIN_NOVELTY,
    Diagnostic.OOD_ENERGY_GAP,
    Diagnostic.FEEDBACK_TEACHER_AGREEMENT,
    Diagnostic.TEACHER_KAPPA,
)
SUM_DIAGNOSTICS = (
    Diagnostic.FEEDBACK_CHECKED,
    Diagnostic.FEEDBACK_RELABELLED,
    Diagnostic.FEEDBACK_DROPPED,
    Diagnostic.FEEDBACK_CONTRADICTED,
    Diagnostic.FEEDBACK_WITHHELD,
)


def run_diagnostics(summary: RunSummary, headline: str) -> dict[str, Any]:
    """The loop students' real-data curve, the pool's diversity at the end of the loop, how far out
    the OOD batches lay, and what the teacher's check did to the feedback."""
    loop = stored_spec(summary.run.spec).loop.iterations
    trained = sorted((it for it in summary.iterations if 1 <= it.index <= loop), key=lambda it: it.index)
    out: dict[str, Any] = {"curve": [it.metrics.get(headline) for it in trained]}
    pooled = [it for it in trained if diagnostic(it.metrics, Diagnostic.POOL_SPREAD) is not None]
    last = pooled[-1].metrics if pooled else {}
    out |= {name.value: value for name in POOL_DIAGNOSTICS if (value := diagnostic(last, name)) is not None}
    for name in MEAN_DIAGNOSTICS:
        values = [value for _, value in diagnostic_series(trained, name)]
        if values:
            out[name.value] = statistics.fmean(values)
    for name in SUM_DIAGNOSTICS:
        values = [value for _, value in diagnostic_series(trained, name)]
        if values:
            out[name.value] = sum(values)
    return out


def mean_diagnostics(per_repeat: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over repeats (the curve point by point, over the repeats that reached the iteration)."""
    out: dict[str, Any] = {}
    names = {name for d in per_repeat for name in d if name != "curve"}
    for name in sorted(names):
        out[name] = statistics.fmean(d[name] for d in per_repeat if name in d)
    curves = [d.get("curve", []) for d in per_repeat]
    points = max((len(c) for c in curves), default=0)
    out["curve"] = [
        statistics.fmean(v) if (v := [c[k] for c in curves if k < len(c) and c[k] is not None]) else None
        for k in range(points)
    ]
    return out


@dataclass
class ModeResult:
    mode: str
    values: list[float] = field(default_factory=list)
    value_repeats: list[int] = field(default_factory=list)  # the repeat each value comes from
    run_ids: list[str] = field(default_factory=list)
    metric: str | None = None
    parameters: float | None = None
    seconds_per_example: float | None = None
    examples: float | None = None  # the supervised reference: real labelled examples trained on
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # run_diagnostics per repeat

    def add(self, repeat: int, value: float) -> None:
        self.values.append(value)
        self.value_repeats.append(repeat)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ModeResult:
        """A mode's row of an earlier results file (`as_dict`), to add repeats to. A file written
        before `diagnostics_by_repeat` was kept holds only their mean: it counts once per value."""
        diagnostics = row.get("diagnostics_by_repeat")
        if diagnostics is None:
            diagnostics = [row["diagnostics"]] * len(row["values"]) if row.get("diagnostics") else []
        return cls(
            mode=row["mode"],
            values=list(row["values"]),
            value_repeats=list(row["value_repeats"]),
            run_ids=list(row["run_ids"]),
            metric=row.get("metric"),
            parameters=row.get("parameters"),
            seconds_per_example=row.get("seconds_per_example"),
            examples=row.get("examples"),
            diagnostics=list(diagnostics),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "metric": self.metric,
            "mean": statistics.fmean(self.values) if self.values else None,
            "std": statistics.stdev(self.values) if len(self.values) > 1 else None,
            "ci95": t_interval(self.values),
            "values": self.values,
            "value_repeats": self.value_repeats,
            "repeats": len(self.values),
            "run_ids": self.run_ids,
            "parameters": self.parameters,
            "seconds_per_example": self.seconds_per_example,
            "examples": self.examples,
            "diagnostics": mean_diagnostics(self.diagnostics) if self.diagnostics else None,
            "diagnostics_by_repeat": self.diagnostics,
        }


def baselines_spec(
    spec: dict[str, Any], repeat: int, measure_teacher: bool, measure_supervised: bool, measure_student: bool
) -> dict[str, Any]:
    """A run that trains no student (loop.iterations 0) and measures the baselines asked for:
    `gold eval --modes teacher` (student, supervised) without gold or vanilla. The supervised
    reference trains on as many real examples as the spec's generation budget, as beside a run."""
    out = mode_spec(spec, "baselines", repeat, measure_teacher, measure_supervised, measure_student)
    budget = LoopSpec.model_validate(out["loop"]).generation_budget
    out["loop"]["iterations"] = 0
    if measure_supervised:
        out["evaluation"].setdefault("reference_examples", budget)
    return out


class UnmeasuredRun(RuntimeError):
    """A student run finished without its headline metric on the real evaluation data."""


def record_student(result: ModeResult, summary: RunSummary, repeat: int) -> None:
    """A gold or vanilla run's final student: its headline metric, diagnostics and costs."""
    result.run_ids.append(str(summary.run.id))
    if summary.run.status != RunStatus.SUCCEEDED:
        return
    metrics = final_metrics(summary)
    headline = eval_metric(stored_spec(summary.run.spec).headline_metric)
    if headline not in metrics:  # a repeat left out of the statistics unseen would bias them
        raise UnmeasuredRun(
            f"run {summary.run.id} ({summary.run.name}) succeeded but its student has no {headline}: "
            "it was not measured on real data (does the spec have an evaluation section?)"
        )
    result.metric = headline
    result.add(repeat, metrics[headline])
    result.diagnostics.append(run_diagnostics(summary, headline))
    result.parameters = metrics.get(STUDENT_PARAMETERS, result.parameters)
    result.seconds_per_example = metrics.get(EVAL_SECONDS_PER_EXAMPLE, result.seconds_per_example)


def record_baselines(
    results: dict[str, ModeResult], summary: RunSummary, repeat: int, measured: list[str]
) -> None:
    """The baselines a succeeded run measured at iteration 0 (teacher, student, supervised)."""
    task_metric = stored_spec(summary.run.spec).headline_metric
    baselines = next((it.metrics for it in summary.iterations if it.index == 0), {})
    for baseline in measured:
        names = BASELINE_METRICS[baseline]
        if names.headline(task_metric) not in baselines:
            continue
        row = results[baseline]
        row.metric = eval_metric(task_metric)
        row.add(repeat, baselines[names.headline(task_metric)])
        row.run_ids.append(str(summary.run.id))
        row.parameters = baselines.get(names.parameters)
        row.seconds_per_example = baselines.get(names.seconds_per_example)
        row.examples = baselines.get(names.examples) if names.examples else None


def evaluate(
    spec: dict[str, Any],
    modes: list[str],
    repeats: int,
    run: Callable[[dict[str, Any]], RunSummary],
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every (repeat, mode) one after the other through `run`; collect the headline metrics.
    The teacher and the student's few-shot baseline (greedy, deterministic) are measured once, by
    the first run; the supervised reference, whose student seed moves with the repeat like the
    others', once per repeat. `earlier` (see `earlier_result`) holds repeats measured before: they
    are kept, not run again."""
    results = {m: ModeResult(m) for m in modes}
    if earlier is not None:
        results |= {
            row["mode"]: ModeResult.from_dict(row) for row in earlier["modes"] if row["mode"] in modes
        }
    student_modes = [m for m in modes if m in STUDENT_MODES]
    for repeat in range(repeats):
        # Baselines no student run of this repeat measures (no gold or vanilla asked for, or
        # all resumed from a file) are measured by a run that trains no student.
        pending = [m for m in student_modes if repeat not in results[m].value_repeats] or ["baselines"]
        for i, mode in enumerate(pending):
            measured = {
                "teacher": "teacher" in modes and i == 0 and not results["teacher"].values,
                "student": "student" in modes and i == 0 and not results["student"].values,
                "supervised": "supervised" in modes
                and i == 0
                and repeat not in results["supervised"].value_repeats,
            }
            if mode == "baselines" and not any(measured.values()):
                continue
            flags = (measured["teacher"], measured["supervised"], measured["student"])
            if mode == "baselines":
                summary = run(baselines_spec(spec, repeat, *flags))
            else:
                summary = run(mode_spec(spec, mode, repeat, *flags))
                record_student(results[mode], summary, repeat)
            if summary.run.status == RunStatus.SUCCEEDED:
                record_baselines(results, summary, repeat, [b for b, wanted in measured.items() if wanted])
    both = {"gold", "vanilla"} <= set(modes)
    paired = paired_difference(results["gold"], results["vanilla"]) if both else None
    return {
        "spec": spec["name"],
        "repeats": repeats,
        "modes": [results[m].as_dict() for m in modes],
        "paired": paired,
    }


def earlier_result(
    document: dict[str, Any], spec_name: str, overrides: dict[str, Any], repeats: int
) -> dict[str, Any]:
    """The result for `spec_name` in a document `gold eval --out` wrote, checked to be from the same
    spec and --set overrides and to hold no repeat beyond `repeats`; ValueError says what differs."""
    if "budgets" in document:
        raise ValueError("it is a budget sweep (--budgets): only plain evaluations resume")
    found = [r for r in document.get("tasks", [document]) if r.get("spec") == spec_name]
    if not found:
        raise ValueError(f"it holds no result for spec {spec_name!r}")
    if document.get("overrides", {}) != overrides:
        raise ValueError(f"its --set overrides {document.get('overrides', {})} differ from these {overrides}")
    result = found[0]
    beyond = sorted({r for row in result["modes"] for r in row["value_repeats"] if r >= repeats})
    if beyond:
        raise ValueError(f"it holds repeat(s) {beyond}, beyond --repeats {repeats}")
    return result


def paired_difference(gold: ModeResult, vanilla: ModeResult) -> dict[str, Any]:
    """gold - vanilla over the repeats both measured: repeat r of each shares the seeds, so the
    seed-to-seed spread cancels in the difference."""
    by_repeat = dict(zip(vanilla.value_repeats, vanilla.values, strict=True))
    measured = zip(gold.value_repeats, gold.values, strict=True)
    pairs = [(r, value - by_repeat[r]) for r, value in measured if r in by_repeat]
    return {
        "a": "gold",
        "b": "vanilla",
        "metric": gold.metric or vanilla.metric,
        **paired_statistics([d for _, d in pairs]),
        "repeats": [r for r, _ in pairs],
    }


def paired_statistics(differences: list[float]) -> dict[str, Any]:
    """Mean, 95% t-interval and win count of paired differences a - b."""
    return {
        "n": len(differences),
        "mean": statistics.fmean(differences) if differences else None,
        "ci95": t_interval(differences),
        "wins": sum(d > 0 for d in differences),
        "ties": sum(d == 0 for d in differences),
        "losses": sum(d < 0 for d in differences),
        "differences": differences,
    }


def sweep(
    spec: dict[str, Any],
    modes: list[str],
    repeats: int,
    budgets: list[int],
    run: Callable[[dict[str, Any]], RunSummary],
) -> dict[str, Any]:
    """`evaluate` at each generation budget; the teacher is measured once (it does not depend on it)."""
    points = []
    for i, budget in enumerate(budgets):
        chosen = modes if i == 0 else [m for m in modes if m not in ("teacher", "student")]
        points.append({"budget": budget, **evaluate(budget_spec(spec, budget), chosen, repeats, run)})
    return {"spec": spec["name"], "repeats": repeats, "budgets": budgets, "points": points}


def format_interval(interval: list[float] | None, signed: bool = False) -> str:
    if interval is None:
        return "-"
    pattern = "{:+.3f}" if signed else "{:.3f}"
    return f"[{pattern.format(interval[0])}, {pattern.format(interval[1])}]"


def format_mean(row: dict[str, Any] | None) -> str:
    """`0.690 [0.650, 0.731]`: the mean and its 95% interval (just the mean with one repeat)."""
    if not row or row.get("mean") is None:
        return "-"
    interval = row.get("ci95")
    return f"{row['mean']:.3f}" + (f" {format_interval(interval)}" if interval else "")


def format_paired(paired: dict[str, Any] | None) -> str:
    """`+0.021 [-0.010, +0.052], ahead in 2 of 3 (1 tied)`: gold - vanilla paired by repeat."""
    if not paired or paired["mean"] is None:
        return "-"
    text = f"{paired['mean']:+.3f}"
    if paired["ci95"]:
        text += f" {format_interval(paired['ci95'], signed=True)}"
    text += f", ahead in {paired['wins']} of {paired['n']}"
    return text + (f" ({paired['ties']} tied)" if paired["ties"] else "")


def paired_caption(paired: dict[str, Any] | None) -> str | None:
    if not paired or paired["mean"] is None:
        return None
    interval = (
        f", 95% t-interval {format_interval(paired['ci95'], signed=True)}"
        if paired["ci95"]
        else " (one repeat: no interval)"
    )
    ties = f", tied in {paired['ties']}" if paired["ties"] else ""
    return (
        f"gold - vanilla, paired by repeat (shared seeds): {paired['mean']:+.3f}{interval}; "
        f"gold ahead in {paired['wins']} of {paired['n']} repeats{ties}"
    )


def results_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['spec']}: real-data metric over {result['repeats']} repeat(s)")
    for column in ("mode", "metric", "mean", "95% interval (t)", "n", "parameters", "s / example"):
        table.add_column(column, justify="right")
    for row in result["modes"]:
        if not row["run_ids"]:
            continue  # not measured (the supervised reference of a spec without reference_path)
        mean = "-" if row["mean"] is None else f"{row['mean']:.3f}"
        params = "-" if not row["parameters"] else f"{row['parameters'] / 1e6:.1f}M"
        latency = "-" if not row["seconds_per_example"] else f"{row['seconds_per_example'] * 1000:.1f} ms"
        table.add_row(
            row["mode"],
            row["metric"] or "-",
            mean,
            format_interval(row.get("ci95")),
            str(row["repeats"]),
            params,
            latency,
        )
    table.caption = paired_caption(result.get("paired"))
    return table


def diagnostics_table(result: dict[str, Any]) -> Table:
    """Per student mode, means over repeats: the loop's real-data curve, the pool's diversity at the
    end of the loop and, for gold, how far out the OOD batches lay and what the feedback check did."""
    table = Table(title=f"{result['spec']}: the loop's data (means over repeats)")
    columns = ("mode", "loop curve", "pool spread", "coverage", "OOD / train novelty", "energy gap")
    for column in (*columns, "fed back: checked / relabelled / dropped", "teacher kappa / withheld"):
        table.add_column(column, justify="right")
    for row in result["modes"]:
        d = row.get("diagnostics")
        if d:
            table.add_row(row["mode"], *_diagnostics_cells(d))
    return table


def _diagnostics_cells(d: dict[str, Any]) -> list[str]:
    """A mode's row of the diagnostics table, from its means over repeats."""

    def cell(name: Diagnostic, pattern: str = "{:.3f}") -> str:
        value = diagnostic(d, name)
        return "-" if value is None else pattern.format(value)

    def has(name: Diagnostic) -> bool:
        return diagnostic(d, name) is not None

    feedback = (Diagnostic.FEEDBACK_CHECKED, Diagnostic.FEEDBACK_RELABELLED, Diagnostic.FEEDBACK_DROPPED)
    return [
        " ".join("-" if v is None else f"{v:.3f}" for v in d["curve"]),
        cell(Diagnostic.POOL_SPREAD),
        cell(Diagnostic.POOL_COVERAGE),
        f"{cell(Diagnostic.OOD_NOVELTY)} / {cell(Diagnostic.TRAIN_NOVELTY)}"
        if has(Diagnostic.OOD_NOVELTY)
        else cell(Diagnostic.TRAIN_NOVELTY),
        cell(Diagnostic.OOD_ENERGY_GAP, "{:+.3f}"),
        "/".join(cell(name, "{:.1f}") for name in feedback) if has(Diagnostic.FEEDBACK_CHECKED) else "-",
        f"{cell(Diagnostic.TEACHER_KAPPA, '{:.2f}')} / {cell(Diagnostic.FEEDBACK_WITHHELD, '{:.1f}')}"
        if has(Diagnostic.TEACHER_KAPPA)
        else "-",
    ]


def tasks_table(results: list[dict[str, Any]]) -> Table:
    """One row per task: the headline metric of each mode (mean [95% interval] over repeats) and
    gold - vanilla paired by repeat."""
    table = Table(title="GOLD vs vanilla vs teacher on real data")
    modes = ("gold", "vanilla", "teacher", "supervised")
    for column in ("task", "metric", *modes, "gold - vanilla", "repeats"):
        table.add_column(column, justify="right")
    for result in results:
        by_mode = {m["mode"]: m for m in result["modes"]}
        metric = next((m["metric"] for m in result["modes"] if m["metric"]), "-")
        table.add_row(
            result["spec"],
            metric,
            *(format_mean(by_mode.get(mode)) for mode in modes),
            format_paired(result.get("paired")),
            str(result["repeats"]),
        )
    return table


def sweep_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"{result['spec']}: real-data metric by generation budget ({result['repeats']} repeat(s))"
    )
    modes = [m["mode"] for m in result["points"][0]["modes"] if m["mode"] != "teacher"]
    paired = any(point.get("paired") for point in result["points"])
    table.add_column("budget (samples)", justify="right")
    for mode in modes:
        table.add_column(mode, justify="right")
    if paired:
        table.add_column("gold - vanilla", justify="right")
    for point in result["points"]:
        by_mode = {m["mode"]: m for m in point["modes"]}
        cells = [format_mean(by_mode.get(mode)) for mode in modes]
        if paired:
            cells.append(format_paired(point.get("paired")))
        table.add_row(str(point["budget"]), *cells)
    teacher = next((m for m in result["points"][0]["modes"] if m["mode"] == "teacher"), None)
    notes = ["mean [95% t-interval over repeats]"]
    if teacher and teacher["mean"] is not None:
        notes.append(f"teacher few-shot: {teacher['mean']:.3f}")
    table.caption = "; ".join(notes)
    return table


def sweep_plot(result: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure  # a Figure of its own: no pyplot state, no backend to pick

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    budgets = [p["budget"] for p in result["points"]]
    styles = {"gold": "-", "vanilla": "-", "supervised": ":"}
    labels = {"supervised": "supervised (n real examples, n = budget or the file's rows)"}
    for mode, style in styles.items():
        rows = [next((m for m in p["modes"] if m["mode"] == mode), None) for p in result["points"]]
        if any(r and r["mean"] is not None for r in rows):
            means = [r["mean"] if r and r["mean"] is not None else float("nan") for r in rows]
            # Error bars are the 95% t-interval over repeats; none where there is one repeat.
            intervals = [r.get("ci95") if r else None for r in rows]
            below = [m - i[0] if i else float("nan") for m, i in zip(means, intervals, strict=True)]
            above = [i[1] - m if i else float("nan") for m, i in zip(means, intervals, strict=True)]
            label = labels.get(mode, mode)
            ax.errorbar(
                budgets, means, yerr=[below, above], marker="o", capsize=3, linestyle=style, label=label
            )
            for budget, mean, row in zip(budgets, means, rows, strict=True):
                if row and row.get("examples") and row["examples"] != budget:
                    ax.annotate(
                        f"n={row['examples']:.0f}", (budget, mean), textcoords="offset points", xytext=(0, 6)
                    )
    teacher = next((m for m in result["points"][0]["modes"] if m["mode"] == "teacher"), None)
    if teacher and teacher["mean"] is not None:
        ax.axhline(teacher["mean"], color="grey", linestyle="--", label="teacher few-shot")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated samples (budget)")
    metric = next((m["metric"] for p in result["points"] for m in p["modes"] if m["metric"]), None)
    ax.set_ylabel(f"student {(metric or 'metric').removeprefix(EVAL_PREFIX).replace('_', ' ')} on real data")
    bars = " (bars: 95% t-interval)" if result["repeats"] > 1 else ""
    ax.set_title(f"{result['spec']}, {result['repeats']} repeat(s){bars}")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
