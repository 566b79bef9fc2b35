"""The tables `gold eval` prints: each mode's mean and interval, the loop's diagnostics, one row per
task, and a budget sweep."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from shared.diagnostics import diagnostic
from shared.names import Diagnostic


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
