"""The plot of a budget sweep: each student mode's real-data metric by generation budget, with the
teacher's few-shot score as a line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.names import EVAL_PREFIX


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
