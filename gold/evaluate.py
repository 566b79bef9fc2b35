"""`gold eval`: the same spec as GOLD (feedback on), vanilla (feedback off, same budget and seeds),
the teacher answering few-shot and, when the spec names a labelled training file
(evaluation.reference_path), the supervised reference (the student trained on as many real labelled
examples as the run generates), measured on the spec's real evaluation data."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from shared.schemas.runs import RunSummary
from shared.spec import RunSpec

MODES = ("gold", "vanilla", "teacher", "supervised")
STUDENT_MODES = ("gold", "vanilla")
# Measured inside the first student run (iteration 0), under these metric names: (prefix of the
# task metrics, e.g. teacher_ + eval_accuracy; parameters; seconds per example; examples trained on).
BASELINE_METRICS = {
    "teacher": ("teacher_", "teacher_parameters", "teacher_seconds_per_example", None),
    "supervised": (
        "reference_",
        "reference_student_parameters",
        "reference_eval_seconds_per_example",
        "reference_examples",
    ),
}


def parse_modes(raw: str) -> list[str]:
    modes = [m.strip() for m in raw.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"--modes: unknown mode(s) {unknown}; choose from {list(MODES)}")
    if not set(modes) & set(STUDENT_MODES):
        raise ValueError(
            "--modes: the teacher and the supervised reference are measured inside a gold or vanilla "
            "run; add one of them"
        )
    return modes


def mode_spec(
    spec: dict[str, Any], mode: str, repeat: int, measure_teacher: bool, measure_supervised: bool = False
) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["name"] = f"{spec['name']}-{mode}-r{repeat}"
    out.setdefault("loop", {})["feedback"] = mode == "gold"
    for part in ("teacher", "student"):
        section = out.setdefault(part, {})
        section["seed"] = int(section.get("seed", 0 if part == "teacher" else 44)) + repeat
    if out.get("evaluation"):
        out["evaluation"]["teacher_baseline"] = measure_teacher
        if not measure_supervised:
            out["evaluation"].pop("reference_path", None)
            out["evaluation"].pop("reference_examples", None)
    return out


def budget_spec(spec: dict[str, Any], budget: int) -> dict[str, Any]:
    """The spec with its generation budget (samples over all iterations) set to `budget`, keeping
    the iteration count and the share of OOD samples."""
    out = copy.deepcopy(spec)
    loop = out.setdefault("loop", {})
    iterations = int(loop.get("iterations", 3))
    train, ood = int(loop.get("samples_per_iteration", 48)), int(loop.get("ood_samples_per_iteration", 16))
    per_iteration = max(budget // iterations, 2)
    ood_share = ood / (train + ood) if train + ood else 0.0
    loop["ood_samples_per_iteration"] = max(int(round(per_iteration * ood_share)), 1 if ood else 0)
    loop["samples_per_iteration"] = per_iteration - loop["ood_samples_per_iteration"]
    loop["feedback_per_iteration"] = min(
        int(loop.get("feedback_per_iteration", 4)), loop["ood_samples_per_iteration"]
    )
    out["name"] = f"{spec['name']}-b{budget}"
    return out


def final_metrics(summary: RunSummary) -> dict[str, float]:
    """The metrics of the run's last student (the final one when there is one)."""
    trained = [it for it in summary.iterations if it.index >= 1 and it.metrics]
    return max(trained, key=lambda it: it.index).metrics if trained else {}


@dataclass
class ModeResult:
    mode: str
    values: list[float] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    metric: str | None = None
    parameters: float | None = None
    seconds_per_example: float | None = None
    examples: float | None = None  # the supervised reference: real labelled examples trained on

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "metric": self.metric,
            "mean": statistics.fmean(self.values) if self.values else None,
            "std": statistics.stdev(self.values) if len(self.values) > 1 else 0.0,
            "values": self.values,
            "repeats": len(self.values),
            "run_ids": self.run_ids,
            "parameters": self.parameters,
            "seconds_per_example": self.seconds_per_example,
            "examples": self.examples,
        }


def evaluate(
    spec: dict[str, Any],
    modes: list[str],
    repeats: int,
    run: Callable[[dict[str, Any]], RunSummary],
) -> dict[str, Any]:
    """Run every (repeat, mode) one after the other through `run`; collect the headline metrics.
    The teacher (deterministic) is measured once; the supervised reference, whose student seed
    moves with the repeat like the others', once per repeat."""
    results = {m: ModeResult(m) for m in modes}
    student_modes = [m for m in modes if m in STUDENT_MODES]
    for repeat in range(repeats):
        for i, mode in enumerate(student_modes):
            measure_teacher = "teacher" in modes and repeat == 0 and i == 0
            measure_supervised = "supervised" in modes and i == 0
            summary = run(mode_spec(spec, mode, repeat, measure_teacher, measure_supervised))
            result = results[mode]
            result.run_ids.append(str(summary.run.id))
            if summary.run.status != "succeeded":
                continue
            metrics = final_metrics(summary)
            headline = f"eval_{RunSpec.model_validate(summary.run.spec).headline_metric}"
            if headline in metrics:
                result.metric = headline
                result.values.append(metrics[headline])
            result.parameters = metrics.get("student_parameters", result.parameters)
            result.seconds_per_example = metrics.get("eval_seconds_per_example", result.seconds_per_example)
            baselines = next((it.metrics for it in summary.iterations if it.index == 0), {})
            for baseline, measured in (("teacher", measure_teacher), ("supervised", measure_supervised)):
                prefix, parameters, seconds, examples = BASELINE_METRICS[baseline]
                if measured and prefix + headline in baselines:
                    row = results[baseline]
                    row.metric = headline
                    row.values.append(baselines[prefix + headline])
                    row.run_ids.append(str(summary.run.id))
                    row.parameters = baselines.get(parameters)
                    row.seconds_per_example = baselines.get(seconds)
                    row.examples = baselines.get(examples) if examples else None
    return {
        "spec": spec["name"],
        "repeats": repeats,
        "modes": [results[m].as_dict() for m in modes],
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
        chosen = modes if i == 0 else [m for m in modes if m != "teacher"]
        points.append({"budget": budget, **evaluate(budget_spec(spec, budget), chosen, repeats, run)})
    return {"spec": spec["name"], "repeats": repeats, "budgets": budgets, "points": points}


def results_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['spec']}: real-data metric over {result['repeats']} repeat(s)")
    for column in ("mode", "metric", "mean", "spread (std)", "parameters", "s / example"):
        table.add_column(column, justify="right")
    for row in result["modes"]:
        if not row["run_ids"]:
            continue  # not measured (the supervised reference of a spec without reference_path)
        mean, spread = ("-", "-") if row["mean"] is None else (f"{row['mean']:.3f}", f"{row['std']:.3f}")
        params = "-" if not row["parameters"] else f"{row['parameters'] / 1e6:.1f}M"
        latency = "-" if not row["seconds_per_example"] else f"{row['seconds_per_example'] * 1000:.1f} ms"
        table.add_row(row["mode"], row["metric"] or "-", mean, spread, params, latency)
    return table


def tasks_table(results: list[dict[str, Any]]) -> Table:
    """One row per task: the headline metric of each mode (mean ± std over repeats)."""
    table = Table(title="GOLD vs vanilla vs teacher on real data")
    for column in ("task", "metric", "gold", "vanilla", "teacher", "supervised", "repeats"):
        table.add_column(column, justify="right")
    for result in results:
        by_mode = {m["mode"]: m for m in result["modes"]}
        metric = next((m["metric"] for m in result["modes"] if m["metric"]), "-")

        def cell(mode: str, by_mode: dict[str, Any] = by_mode) -> str:
            row = by_mode.get(mode)
            if not row or row["mean"] is None:
                return "-"
            return f"{row['mean']:.3f}" + (f" ± {row['std']:.3f}" if row["repeats"] > 1 else "")

        table.add_row(
            result["spec"],
            metric,
            *(cell(mode) for mode in ("gold", "vanilla", "teacher", "supervised")),
            str(result["repeats"]),
        )
    return table


def sweep_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"{result['spec']}: real-data metric by generation budget ({result['repeats']} repeat(s))"
    )
    modes = [m["mode"] for m in result["points"][0]["modes"] if m["mode"] != "teacher"]
    table.add_column("budget (samples)", justify="right")
    for mode in modes:
        table.add_column(mode, justify="right")
    for point in result["points"]:
        by_mode = {m["mode"]: m for m in point["modes"]}
        cells = []
        for mode in modes:
            row = by_mode.get(mode, {})
            cells.append("-" if row.get("mean") is None else f"{row['mean']:.3f} ± {row['std']:.3f}")
        table.add_row(str(point["budget"]), *cells)
    teacher = next((m for m in result["points"][0]["modes"] if m["mode"] == "teacher"), None)
    if teacher and teacher["mean"] is not None:
        table.caption = f"teacher few-shot: {teacher['mean']:.3f}"
    return table


def sweep_plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    budgets = [p["budget"] for p in result["points"]]
    styles = {"gold": "-", "vanilla": "-", "supervised": ":"}
    labels = {"supervised": "supervised (n real examples, n = budget or the file's rows)"}
    for mode, style in styles.items():
        rows = [next((m for m in p["modes"] if m["mode"] == mode), None) for p in result["points"]]
        if any(r and r["mean"] is not None for r in rows):
            means = [r["mean"] if r and r["mean"] is not None else float("nan") for r in rows]
            stds = [r["std"] if r else 0.0 for r in rows]
            label = labels.get(mode, mode)
            ax.errorbar(budgets, means, yerr=stds, marker="o", capsize=3, linestyle=style, label=label)
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
    ax.set_ylabel(f"student {(metric or 'metric').removeprefix('eval_').replace('_', ' ')} on real data")
    ax.set_title(result["spec"])
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
