"""The run report: one self-contained HTML page with PNG plots (metric per iteration, energy
histograms, label distribution, diversity) and the feedback samples the loop chose."""

from __future__ import annotations

import base64
import html
import io
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from services.orchestrator.failures import explain
from services.orchestrator.service import get_run, list_iterations
from shared.auth import Principal
from shared.db.models import Sample, Step
from shared.diagnostics import diagnostic, diagnostic_series
from shared.names import (
    EVALUATION_ERRORS,
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
from shared.schemas.runs import IterationRead
from shared.spec import RunSpec


@dataclass
class RunData:
    run_id: uuid.UUID
    name: str
    status: str
    error: str | None
    spec: RunSpec
    iterations: list[IterationRead]
    samples: list[Sample]
    # The last trained student's wrong answers on the real data (the final one when trained).
    student_errors: dict[str, Any] = field(default_factory=dict)
    # The subjects the teacher listed once for the OOD prompts (loop.ood_attributes).
    ood_attributes: list[str] = field(default_factory=list)
    # The run's name in legends, where several runs of one kind share a chart (the console's compare).
    named: bool = False

    @property
    def label(self) -> str:
        kind = "gold" if self.spec.loop.feedback else "vanilla"
        return f"{self.name} ({kind})" if self.named else kind


def load_run(
    run_id: uuid.UUID, *, session: Session, principal: Principal, with_samples: bool = True
) -> RunData:
    """`with_samples=False` for the plots of iterations alone (metric, diversity, OOD): a large
    run's samples are most of the time it takes to draw."""
    run = get_run(run_id, session=session, principal=principal)
    samples = (
        list(
            session.scalars(
                select(Sample)
                .where(Sample.run_id == run_id)
                .order_by(Sample.iteration, Sample.position)
                .options(defer(Sample.embedding), defer(Sample.prompt_examples))  # unread here
            )
        )
        if with_samples
        else []
    )
    trained = session.scalars(
        select(Step.result)
        .where(Step.run_id == run_id, Step.stage.in_([Stage.TRAIN, Stage.FINAL_TRAIN]))
        .order_by(Step.iteration.desc())
    )
    found = (r["extra"][EVALUATION_ERRORS] for r in trained if EVALUATION_ERRORS in r.get("extra", {}))
    errors: dict[str, Any] = next(found, {})
    listed = session.scalar(select(Step.result).where(Step.run_id == run_id, Step.stage == Stage.ATTRIBUTES))
    return RunData(
        run_id,
        run.name,
        run.status,
        run.error,
        RunSpec.model_validate(run.spec),
        list_iterations(run_id, session=session, principal=principal),
        samples,
        errors,
        list((listed or {}).get("attributes", [])),
    )


def _png(fig: Figure) -> str:
    # A Figure of its own, not pyplot's global state: reports are drawn in request threads, and a
    # Figure with no pyplot manager is freed with its last reference (savefig uses the Agg canvas).
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


# The plots by name, for pages that serve each as an image of its own (the console): whether each
# needs the runs' samples, and how it is drawn (None: no data to draw yet).
CHARTS: dict[str, tuple[bool, Callable[[list[RunData]], str | None]]] = {
    "metric": (False, lambda runs: metric_plot(runs)),
    "energy": (True, lambda runs: energy_plot(runs[0])),
    "labels": (True, lambda runs: label_plot(runs[0])),
    "ood": (False, lambda runs: ood_plot(runs)),
    "diversity": (False, lambda runs: diversity_plot(runs)),
}


def chart_png(
    name: str, run_ids: list[uuid.UUID], *, session: Session, principal: Principal, named: bool = False
) -> bytes | None:
    """One plot of the report as PNG bytes, or None while it has no data."""
    needs_samples, draw = CHARTS[name]
    runs = [load_run(r, session=session, principal=principal, with_samples=needs_samples) for r in run_ids]
    if named:
        runs = [replace(r, named=True) for r in runs]
    image = draw(runs)
    return base64.b64decode(image) if image is not None else None


def _loop_iterations(data: RunData) -> list[IterationRead]:
    return [it for it in data.iterations if 1 <= it.index <= data.spec.loop.iterations]


def baseline(data: RunData, name: str) -> float | None:
    """A metric measured at iteration 0: teacher_eval_accuracy, reference_eval_f1, ..."""
    return next((it.metrics.get(name) for it in data.iterations if it.index == 0), None)


def has_student_points(data: RunData) -> bool:
    """Whether a student was measured yet (an iteration's real-data or held-out metric)."""
    names = (eval_metric(data.spec.headline_metric), holdout_metric(data.spec.task.type))
    return any(name in it.metrics for it in data.iterations if it.index >= 1 for name in names)


def metric_plot(runs: list[RunData]) -> str | None:
    """None until some run has a measured student: a chart of baselines alone says nothing."""
    if not any(has_student_points(d) for d in runs):
        return None
    metric = runs[0].spec.headline_metric
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    for data in runs:
        for name, style in ((eval_metric(metric), "-o"), (holdout_metric(data.spec.task.type), ":s")):
            points = per_iteration(data, name)
            if points:
                ax.plot(*zip(*points, strict=True), style, label=f"{data.label} {name.replace('_', ' ')}")
        final = next((it for it in data.iterations if it.index == data.spec.loop.iterations + 1), None)
        if final and eval_metric(metric) in final.metrics:
            ax.plot(
                [final.index],
                [final.metrics[eval_metric(metric)]],
                "*",
                markersize=14,
                label=f"{data.label} final student",
            )
    teacher = baseline(runs[0], teacher_eval_metric(metric))
    if teacher is not None:
        ax.axhline(teacher, color="grey", linestyle="--", label="teacher few-shot")
    fewshot = baseline(runs[0], fewshot_metric(eval_metric(metric)))
    if fewshot is not None:
        ax.axhline(fewshot, color="tab:green", linestyle="-.", label="student before distillation, few-shot")
    reference = baseline(runs[0], reference_metric(eval_metric(metric)))
    if reference is not None:
        examples = baseline(runs[0], REFERENCE_EXAMPLES) or 0
        ax.axhline(reference, color="black", linestyle=":", label=f"supervised, {examples:.0f} real examples")
    last = runs[0].spec.loop.iterations
    ax.set_xticks(range(1, last + 2), [*map(str, range(1, last + 1)), "final"])
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"student {metric.replace('_', ' ')} per iteration (real data; held-out generated data)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def energy_plot(data: RunData) -> str | None:
    loop = _loop_iterations(data)
    if not loop or not any(s.energy is not None for s in data.samples):
        return None
    fig = Figure(figsize=(3.2 * len(loop), 2.8))
    axes = fig.subplots(1, len(loop), squeeze=False, sharey=True)
    low_q, high_q = data.spec.loop.selection_band
    for ax, it in zip(axes[0], loop, strict=True):
        train = [
            s.energy
            for s in data.samples
            if s.iteration == it.index and s.kind == "train" and s.energy is not None
        ]
        ood = [
            s.energy
            for s in data.samples
            if s.iteration == it.index and s.kind == "ood" and s.energy is not None
        ]
        if train or ood:
            bins = np.histogram_bin_edges(train + ood, bins=15)
            ax.hist(train, bins=bins, alpha=0.6, label="training samples")
            ax.hist(ood, bins=bins, alpha=0.6, label="OOD samples")
        if ood:
            low, high = np.quantile(ood, [low_q, high_q])
            ax.axvspan(low, high, color="orange", alpha=0.15, label=f"selected band [{low_q}, {high_q})")
        selected = [s.energy for s in data.samples if s.iteration == it.index and s.selected]
        for energy in selected:
            ax.axvline(energy, color="red", linewidth=1)
        ax.set_title(f"iteration {it.index}")
        ax.set_xlabel("free energy (low = familiar)")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def label_plot(data: RunData) -> str | None:
    labels = data.spec.task.labels
    loop = _loop_iterations(data)
    if not labels or not loop or not any(s.iteration >= 1 for s in data.samples):
        return None
    counts = {it.index: Counter(s.label for s in data.samples if s.iteration == it.index) for it in loop}
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    bottom = np.zeros(len(loop))
    for label in labels:
        values = np.array([counts[it.index][label] for it in loop], dtype=float)
        ax.bar([str(it.index) for it in loop], values, bottom=bottom, label=label)
        bottom += values
    ax.set_xlabel("iteration")
    ax.set_ylabel("generated samples")
    ax.set_title("label distribution of generated data")
    ax.legend(fontsize=7)
    return _png(fig)


def per_iteration(data: RunData, name: str) -> list[tuple[int, float]]:
    return [(it.index, it.metrics[name]) for it in _loop_iterations(data) if name in it.metrics]


def diagnostic_points(data: RunData, name: Diagnostic) -> list[tuple[int, float]]:
    return diagnostic_series(_loop_iterations(data), name)


def _lines(ax: Axes, runs: list[RunData], names: dict[Diagnostic, str]) -> None:
    for data in runs:
        for name, style in names.items():
            points = diagnostic_points(data, name)
            if points:
                ax.plot(*zip(*points, strict=True), style, label=f"{data.label} {name.replace('_', ' ')}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    if ax.get_legend_handles_labels()[0]:  # a panel of diagnostics the run did not record is empty
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


DIVERSITY = (
    Diagnostic.DISTINCT_2,
    Diagnostic.EMBEDDING_SPREAD,
    Diagnostic.POOL_SPREAD,
    Diagnostic.POOL_COVERAGE,
    Diagnostic.NEAREST_NEIGHBOUR_SIMILARITY,
)


def diversity_plot(runs: list[RunData]) -> str | None:
    """Per iteration, in the MiniLM sentence-embedding space and in words (pool = everything
    generated so far); None before any iteration measured it."""
    if not any(diagnostic_points(d, name) for d in runs for name in DIVERSITY):
        return None
    spreads = {Diagnostic.DISTINCT_2: "-o", Diagnostic.EMBEDDING_SPREAD: "--s", Diagnostic.POOL_SPREAD: ":^"}
    pool = {Diagnostic.POOL_COVERAGE: "-o", Diagnostic.NEAREST_NEIGHBOUR_SIMILARITY: "--s"}
    panels = [
        (names, title)
        for names, title in (
            (spreads, "diversity (higher = more varied)"),
            (pool, "pool coverage; nearest-neighbour similarity"),
        )
        if any(diagnostic_points(d, name) for d in runs for name in names)
    ]  # a panel none of the runs recorded is left out rather than drawn empty
    fig = Figure(figsize=(5.5 * len(panels), 3.4))
    for ax, (names, title) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _lines(ax, runs, names)
        ax.set_title(title)
    return _png(fig)


def ood_plot(runs: list[RunData]) -> str | None:
    """Is the OOD batch out of distribution? Its distance from the pool against the training
    batch's, and its energy gap to the training samples under the student."""
    if not any(diagnostic_points(d, Diagnostic.OOD_NOVELTY) for d in runs):
        return None
    fig = Figure(figsize=(11, 3.4))
    left, right = fig.subplots(1, 2)
    _lines(left, runs, {Diagnostic.OOD_NOVELTY: "-o", Diagnostic.TRAIN_NOVELTY: "--s"})
    left.set_title("distance from the pool (1 - nearest cosine)")
    gapped = [d for d in runs if diagnostic_points(d, Diagnostic.OOD_ENERGY_GAP)]
    _lines(right, gapped, {Diagnostic.OOD_ENERGY_GAP: "-o"})
    right.axhline(0.0, color="grey", linewidth=0.8)
    right.set_title("energy gap: E(OOD) - E(held-out training samples)")
    return _png(fig)


def _ood_attributes(data: RunData) -> str:
    """The subjects the OOD prompts were steered to: where the loop looked for blind spots."""
    if not data.ood_attributes:
        return ""
    listed = ", ".join(html.escape(a) for a in data.ood_attributes)
    return f"<p>Each OOD prompt named one of these subjects, listed by the teacher: {listed}.</p>"


NAN = float("nan")


def _or(metrics: dict[str, float], name: Diagnostic, missing: float) -> float:
    """A diagnostic in a table cell: `missing` where the iteration did not record it."""
    value = diagnostic(metrics, name)
    return missing if value is None else value


def _feedback_summary(data: RunData) -> str:
    """The teacher's check of the band per iteration (loop.feedback_check) and its judgement of
    the task (teacher.min_kappa)."""
    rows = [
        (it.index, it.metrics)
        for it in _loop_iterations(data)
        if diagnostic(it.metrics, Diagnostic.FEEDBACK_CHECKED) is not None
    ]
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{index}</td><td>{_or(m, Diagnostic.FEEDBACK_CHECKED, 0):.0f}</td>"
        f"<td>{_or(m, Diagnostic.FEEDBACK_TEACHER_AGREEMENT, NAN):.2f}</td>"
        f"<td>{_or(m, Diagnostic.FEEDBACK_RELABELLED, 0):.0f}</td>"
        f"<td>{_or(m, Diagnostic.FEEDBACK_DROPPED, 0):.0f}</td>"
        f"<td>{_or(m, Diagnostic.TEACHER_KAPPA, NAN):.2f}</td>"
        f"<td>{'withheld' if diagnostic(m, Diagnostic.FEEDBACK_WITHHELD) else 'fed back'}</td></tr>"
        for index, m in rows
    )
    return (
        f"<p>Band samples are checked by the teacher before they are fed back "
        f"(loop.feedback_check = {data.spec.loop.feedback_check}); feedback is withheld while the "
        f"teacher's labels of the run's OOD samples agree with the requested ones no better than "
        f"chance (Cohen's kappa under teacher.min_kappa = {data.spec.teacher.min_kappa}).</p>"
        "<table><tr><th>iteration</th><th>band samples checked</th><th>teacher agrees with label</th>"
        "<th>fed back relabelled</th><th>left out</th><th>teacher kappa (run so far)</th>"
        f"<th>feedback</th></tr>{body}</table><br>"
    )


def _verification_summary(data: RunData) -> str:
    """The teacher's check of every generated label per iteration (verification.policy) and
    whether it judged the task well enough to change any (teacher.min_kappa)."""
    rows = [
        (it.index, it.metrics)
        for it in _loop_iterations(data)
        if diagnostic(it.metrics, Diagnostic.TEACHER_AGREEMENT) is not None
    ]
    if not rows:
        return "<p>Labels were not checked by the teacher (verification.policy = off).</p>"
    at_chance = "kept as asked (teacher at chance)"
    body = "".join(
        f"<tr><td>{index}</td><td>{_or(m, Diagnostic.TEACHER_AGREEMENT, NAN):.2f}</td>"
        f"<td>{_or(m, Diagnostic.VERIFICATION_KAPPA, NAN):.2f}</td>"
        f"<td>{at_chance if diagnostic(m, Diagnostic.VERIFICATION_WITHHELD) else 'applied'}</td>"
        f"<td>{_or(m, Diagnostic.LABEL_FIDELITY_AFTER_VERIFICATION, NAN):.2f}</td>"
        f"<td>{_or(m, Diagnostic.VERIFIED_EXCLUDED, 0):.0f}</td></tr>"
        for index, m in rows
    )
    return (
        f"<p>The teacher scores every generated label (verification.policy = "
        f"{data.spec.verification.policy}); its labels are used only where they agree with the "
        f"requested ones better than chance (Cohen's kappa at least teacher.min_kappa = "
        f"{data.spec.teacher.min_kappa}).</p>"
        "<table><tr><th>iteration</th><th>teacher agrees with requested label</th><th>kappa</th>"
        "<th>teacher's labels</th><th>trained labels the teacher agrees with</th><th>left out</th>"
        f"</tr>{body}</table><br>"
    )


def _student_errors(data: RunData) -> str:
    """What the last trained student got wrong on the real data: the confusion counts and the
    first wrong answers, to read beside the generated samples."""
    errors = data.student_errors
    if not errors:
        return "<p>No real-data evaluation (evaluation is not set).</p>"
    parts = [f"<p>{errors['wrong']} wrong answers on the real evaluation data; the first ones below.</p>"]
    confusion: dict[str, dict[str, int]] = errors.get("confusion", {})
    if confusion:
        answered = sorted({a for row in confusion.values() for a in row})
        head = "".join(f"<th>answered {html.escape(a)}</th>" for a in answered)
        body = "".join(
            f"<tr><td>{html.escape(expected)}</td>"
            + "".join(f"<td>{row.get(a, 0)}</td>" for a in answered)
            + "</tr>"
            for expected, row in sorted(confusion.items())
        )
        parts.append(f"<table><tr><th>expected</th>{head}</tr>{body}</table><br>")
    rows = "".join(
        "<tr><td>"
        + html.escape(" | ".join(str(v) for v in e["input"].values()))
        + f"</td><td>{html.escape(str(e['expected']))}</td><td>{html.escape(str(e['answered']))}</td></tr>"
        for e in errors.get("shown", [])
    )
    parts.append(f"<table><tr><th>input</th><th>expected</th><th>answered</th></tr>{rows}</table>")
    return "".join(parts)


def _feedback_table(data: RunData) -> str:
    fields = [*data.spec.task.input_fields]
    rows = [s for s in data.samples if s.selected]
    if not rows:
        why = (
            "no OOD batch was scored yet" if data.spec.loop.feedback else "vanilla run: loop.feedback is off"
        )
        return f"<p>No feedback samples were selected ({why}).</p>"
    columns = ["iteration", "energy", *fields, "requested label", "teacher label", "teacher confidence"]
    columns.append("fed back as")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)

    def teacher(s: Sample) -> tuple[str, str]:
        if not s.teacher_probs:
            return "-", "-"
        best = max(s.teacher_probs, key=s.teacher_probs.__getitem__)
        return best, f"{s.teacher_probs[best]:.2f}"

    body = "".join(
        "<tr>"
        + f"<td>{s.iteration}</td><td>{s.energy:.3f}</td>"
        + "".join(f"<td>{html.escape(s.fields.get(f, ''))}</td>" for f in fields)
        + "".join(
            f"<td>{html.escape(v)}</td>"
            for v in (
                s.requested_label or "-",
                *teacher(s),
                s.label or s.fields.get(data.spec.task.output_field, ""),
            )
        )
        + "</tr>"
        for s in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _failure(data: RunData) -> str:
    """A failed run's page opens with its error in words: which service, what it said, what to do."""
    if not data.error:
        return ""
    failure = explain(data.error)
    return (
        f"<div class='failure'><h2>{html.escape(failure.headline)}</h2>"
        f"<p><b>It said:</b> {html.escape(failure.said)}</p>"
        f"<p><b>What to do:</b> {html.escape(failure.todo)}</p></div>"
    )


def _img(b64: str | None, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{b64}">' if b64 else ""


def render_report(runs: list[RunData]) -> str:
    """HTML for one run, or a gold run compared with others (e.g. its vanilla twin)."""
    main = runs[0]
    metric = main.spec.headline_metric
    teacher = baseline(main, teacher_eval_metric(metric))
    metrics_rows = "".join(
        f"<tr><td>{d.label}</td><td>{it.index if it.index <= d.spec.loop.iterations else 'final'}</td>"
        f"<td>{it.metrics.get(eval_metric(metric), float('nan')):.3f}</td>"
        f"<td>{it.metrics.get(holdout_metric(d.spec.task.type), float('nan')):.3f}</td>"
        f"<td>{it.metrics.get(TRAIN_LOSS, float('nan')):.3f}</td></tr>"
        for d in runs
        for it in d.iterations
        if it.index >= 1
    )
    vanilla = not main.spec.loop.feedback
    sections = [
        (
            "Metric per iteration",
            _img(metric_plot(runs), "metric per iteration"),
            "No student was measured yet.",
        ),
        (
            "Energy of training vs OOD samples",
            _img(energy_plot(main), "energy histograms"),
            "No energies (vanilla run: loop.feedback is off)." if vanilla else "No OOD batch was scored yet.",
        ),
        (
            "Label distribution",
            _img(label_plot(main), "label distribution"),
            "No generated samples yet." if main.spec.task.labels else "Not a classification task.",
        ),
        (
            "Out of distribution?",
            _img(ood_plot(runs), "OOD distance and energy gap"),
            "No OOD batches (vanilla run: loop.feedback is off)." if vanilla else "No OOD batch yet.",
        ),
        ("Diversity", _img(diversity_plot(runs), "diversity"), "No iteration measured it yet."),
    ]
    parts = [
        f"<h1>GOLD run {html.escape(main.name)}</h1>",
        _failure(main),
        f"<p>run {main.run_id} · {main.status}"
        + (f" · teacher few-shot {metric.replace('_', ' ')} {teacher:.3f}" if teacher is not None else "")
        + "</p>",
    ]
    for title, image, missing in sections:
        parts += [f"<h2>{title}</h2>", image or f"<p>{missing}</p>"]
        if title == "Metric per iteration" and metrics_rows:
            parts.append(
                f"<table><tr><th>run</th><th>iteration</th><th>real-data {metric.replace('_', ' ')}</th>"
                f"<th>held-out generated</th><th>train loss</th></tr>{metrics_rows}</table>"
            )
    parts += [
        "<h2>The teacher's check of the generated labels</h2>",
        _verification_summary(main),
        "<h2>The student's errors on the real data</h2>",
        _student_errors(main),
        "<h2>Feedback samples chosen</h2>",
        _ood_attributes(main),
        _feedback_summary(main),
        _feedback_table(main),
    ]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        ".failure{border:2px solid #b00020;background:#fff0f0;padding:0.5em 1em}"
    )
    title = f"<title>GOLD run {html.escape(main.name)}</title>"
    head = f"<head><meta charset='utf-8'>{title}<style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(parts)}</body></html>"


def build_report(
    run_id: uuid.UUID, compare: list[uuid.UUID], *, session: Session, principal: Principal
) -> str:
    """Every run on the page, compared ones included, must be visible to the principal."""
    return render_report([load_run(r, session=session, principal=principal) for r in [run_id, *compare]])
