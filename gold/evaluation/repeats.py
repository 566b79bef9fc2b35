"""Running an evaluation: every (repeat, mode) one after the other, the repeats of an earlier
results file kept, and the same at each generation budget of a sweep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gold.evaluation.mode_results import ModeResult, paired_difference, record_baselines, record_student
from gold.evaluation.mode_specs import STUDENT_MODES, baselines_spec, budget_spec, mode_spec
from shared.names import RunStatus
from shared.schemas.runs import RunSummary

# Told the result so far after each run (a partial result: the repeats and budgets not yet run are
# absent), so a stopped evaluation leaves what it measured.
Progress = Callable[[dict[str, Any]], None]


def evaluate(
    spec: dict[str, Any],
    modes: list[str],
    repeats: int,
    run: Callable[[dict[str, Any]], RunSummary],
    earlier: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every (repeat, mode) one after the other through `run`; collect the headline metrics.
    The teacher and the student's few-shot baseline (greedy, deterministic) are measured once, by
    the first run; the supervised reference, whose student seed moves with the repeat like the
    others', once per repeat. `earlier` (see `earlier_result`) holds repeats measured before: they
    are kept, not run again. `progress` is told the result so far after each run."""
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
            if progress is not None:
                progress(_result(spec, modes, repeats, results))
    return _result(spec, modes, repeats, results)


def _result(
    spec: dict[str, Any], modes: list[str], repeats: int, results: dict[str, ModeResult]
) -> dict[str, Any]:
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
    result: dict[str, Any] = found[0]
    beyond = sorted({r for row in result["modes"] for r in row["value_repeats"] if r >= repeats})
    if beyond:
        raise ValueError(f"it holds repeat(s) {beyond}, beyond --repeats {repeats}")
    return result


def sweep(
    spec: dict[str, Any],
    modes: list[str],
    repeats: int,
    budgets: list[int],
    run: Callable[[dict[str, Any]], RunSummary],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """`evaluate` at each generation budget; the teacher is measured once (it does not depend on it).
    `progress` is told the sweep so far after each run (the budgets not reached yet have no point)."""
    points: list[dict[str, Any]] = []
    for i, budget in enumerate(budgets):
        chosen = modes if i == 0 else [m for m in modes if m not in ("teacher", "student")]

        def told(point: dict[str, Any], budget: int = budget) -> None:
            if progress is not None:
                progress(_swept(spec, repeats, budgets, [*points, {"budget": budget, **point}]))

        point = evaluate(budget_spec(spec, budget), chosen, repeats, run, progress=told)
        points.append({"budget": budget, **point})
    return _swept(spec, repeats, budgets, points)


def _swept(
    spec: dict[str, Any], repeats: int, budgets: list[int], points: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"spec": spec["name"], "repeats": repeats, "budgets": budgets, "points": points}
