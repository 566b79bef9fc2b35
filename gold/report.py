"""Tables and files a person reads after a run: per-iteration results and where the time went."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from shared.diagnostics import diagnostic_series
from shared.names import (
    REFERENCE_EXAMPLES,
    TRAIN_LOSS,
    Diagnostic,
    Stage,
    eval_metric,
    fewshot_metric,
    holdout_metric,
    reference_metric,
    teacher_eval_metric,
)
from shared.schemas.runs import RunSummary
from shared.spec import stored_spec

# Every stage is in one group (tests/unit/cli/test_report.py checks): time outside the stages is "other".
STAGE_GROUPS = {
    "generation": (Stage.ATTRIBUTES, Stage.GENERATE_TRAIN, Stage.GENERATE_OOD),
    "teacher verification": (Stage.VERIFY,),
    "training": (Stage.TRAIN, Stage.FINAL_TRAIN),
    "scoring": (Stage.SCORE, Stage.SELECT),
    "teacher baseline": (Stage.TEACHER_EVAL,),
    "supervised reference": (Stage.REFERENCE_TRAIN,),
    "student few-shot baseline": (Stage.STUDENT_EVAL,),
}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def iteration_table(summary: RunSummary) -> Table:
    spec = stored_spec(summary.run.spec)
    loops, metric = spec.loop.iterations, spec.headline_metric
    short = {"accuracy": "acc", "exact_match": "EM", "rouge_l": "R-L", "macro_f1": "m-F1"}.get(metric, metric)
    table = Table(title=f"run {summary.run.id} · {summary.run.name} · {summary.run.status}")
    # short headers: the table must fit an 80-column terminal
    for column in ("iter", "ok/asked", "ood", "fed back", "loss", "held-out", f"real {short}", "s"):
        table.add_column(column, justify="right", no_wrap=True)
    baselines: dict[str, float] = {}
    for it in summary.iterations:
        if it.index == 0:
            baselines = it.metrics
            continue
        train = it.parse_stats.get("train", {})
        ood = it.parse_stats.get("ood", {})
        name = "final" if it.index > loops else str(it.index)
        table.add_row(
            name,
            f"{train.get('accepted', '-')}/{train.get('requested', '-')}" if train else "-",
            str(ood.get("accepted", "-")) if ood else "-",
            str(it.sample_counts.get("selected", 0)) if ood else "-",
            _fmt(it.metrics.get(TRAIN_LOSS)),
            _fmt(it.metrics.get(holdout_metric(spec.task.type))),
            _fmt(it.metrics.get(eval_metric(metric))),
            f"{sum(it.timings.values()):.0f}",
        )
    captions = []
    name = metric.replace("_", " ")
    teacher, reference = teacher_eval_metric(metric), reference_metric(eval_metric(metric))
    if teacher in baselines:
        captions.append(f"teacher few-shot real-data {name}: {baselines[teacher]:.3f}")
    fewshot = fewshot_metric(eval_metric(metric))
    if fewshot in baselines:
        captions.append(f"student before distillation, few-shot real-data {name}: {baselines[fewshot]:.3f}")
    if reference in baselines:
        captions.append(
            f"supervised reference ({baselines.get(REFERENCE_EXAMPLES, 0):.0f} real examples): "
            f"{baselines[reference]:.3f}"
        )

    def per_iteration(name: Diagnostic) -> list[float]:
        return [value for _, value in diagnostic_series(summary.iterations, name)]

    agreement = per_iteration(Diagnostic.TEACHER_AGREEMENT)
    after = per_iteration(Diagnostic.LABEL_FIDELITY_AFTER_VERIFICATION)
    if agreement:
        unused = sum(per_iteration(Diagnostic.VERIFICATION_WITHHELD))
        captions.append(
            f"label fidelity (teacher agrees): generated {sum(agreement) / len(agreement):.3f}"
            + (f", trained on {sum(after) / len(after):.3f}" if after else "")
            + (f"; labels kept as asked in {unused:.0f} iterations (teacher at chance)" if unused else "")
        )
    checked, relabelled, dropped = (
        sum(per_iteration(name))
        for name in (Diagnostic.FEEDBACK_CHECKED, Diagnostic.FEEDBACK_RELABELLED, Diagnostic.FEEDBACK_DROPPED)
    )
    if checked:
        withheld = sum(per_iteration(Diagnostic.FEEDBACK_WITHHELD))
        captions.append(
            f"feedback checked by the teacher: {checked:.0f} band samples, {relabelled:.0f} fed back "
            f"relabelled, {dropped:.0f} left out"
            + (f"; withheld in {withheld:.0f} iterations (teacher at chance)" if withheld else "")
        )
    ood, train = per_iteration(Diagnostic.OOD_NOVELTY), per_iteration(Diagnostic.TRAIN_NOVELTY)
    gap = per_iteration(Diagnostic.OOD_ENERGY_GAP)
    if ood and gap:
        captions.append(
            "OOD distance from pool "
            + " ".join(f"{v:.2f}" for v in ood)
            + (" vs training " + " ".join(f"{v:.2f}" for v in train) if train else "")
            + "; energy gap "
            + " ".join(f"{v:+.2f}" for v in gap)
        )
    coverage = per_iteration(Diagnostic.POOL_COVERAGE)
    if coverage:
        captions.append(
            "pool coverage "
            + " ".join(f"{v:.2f}" for v in coverage)
            + "; distinct-2 "
            + " ".join(f"{v:.2f}" for v in per_iteration(Diagnostic.DISTINCT_2))
        )
    table.caption = "\n".join(captions) or None
    return table


def time_split(summary: RunSummary) -> dict[str, float]:
    totals = dict.fromkeys(STAGE_GROUPS, 0.0)
    for it in summary.iterations:
        for stage, seconds in it.timings.items():
            for group, stages in STAGE_GROUPS.items():
                if stage in stages:
                    totals[group] += seconds
    run = summary.run
    if run.started_at and run.finished_at:
        wall = (run.finished_at - run.started_at).total_seconds()
        totals["other"] = max(wall - sum(totals.values()), 0.0)
        totals["total"] = wall
    return totals


def time_split_table(summary: RunSummary) -> Table:
    split = time_split(summary)
    total = split.get("total") or sum(split.values()) or 1.0
    table = Table(title="where the time went")
    table.add_column("part")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for part, seconds in split.items():
        optional = (
            "teacher baseline",
            "supervised reference",
            "student few-shot baseline",
            "teacher verification",
        )
        if not seconds and part in optional:
            continue  # not asked for in this run (or the teacher baseline was reused)
        table.add_row(part, f"{seconds:.0f}", "" if part == "total" else f"{seconds / total:.0%}")
    return table


def write_report(content: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path
