"""Feedback stages: the iteration's samples scored by free energy under the student just trained,
and the OOD samples in the energy band, checked by the teacher, chosen as the next prompt's feedback."""

from __future__ import annotations

import uuid

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.orchestrator.context import RunContext, StepFailed
from services.orchestrator.feedback import (
    Checked,
    check_feedback,
    requested_label,
    teacher_kappa,
    trusts_teacher,
)
from services.orchestrator.stages.done import Done
from services.orchestrator.stages.records import iteration_row, samples
from shared.db.metrics import upsert_metrics
from shared.db.models import Iteration, Sample
from shared.names import Diagnostic
from shared.schemas.scoring import EnergyRequest, SelectRequest

# The teacher's label of each OOD sample of an iteration beside the requested one, kept in the
# iteration's parse_stats: the feedback gate's kappa is over every OOD sample judged in the run.
JUDGEMENT = "teacher_judgement"
# Samples per energy request: each answers in seconds on a CPU student, and the run's progress
# moves between them.
SCORE_BATCH = 256


def score(ctx: RunContext, iteration: int) -> Done:
    """Free energy of the iteration's OOD samples (for selection) and, for the report, of its
    training samples, under the student just trained."""
    with ctx.sessions() as session:
        scored = samples(session, ctx.run_id, iteration=iteration, kind="ood") + samples(
            session, ctx.run_id, iteration=iteration, kind="train"
        )
        checkpoint_id = session.scalar(
            select(Iteration.checkpoint_id).where(
                Iteration.run_id == ctx.run_id, Iteration.index == iteration
            )
        )
    if checkpoint_id is None:
        raise StepFailed(f"iteration {iteration} has no student checkpoint to score with")
    # In batches: each sample's energy is its own, and the run shows how many are scored.
    energies: list[float] = []
    for start in range(0, len(scored), SCORE_BATCH):
        request = EnergyRequest(
            checkpoint_id=checkpoint_id,
            samples=[s.fields for s in scored[start : start + SCORE_BATCH]],
            temperature=ctx.spec.loop.energy_temperature,
        )
        energies += ctx.call(ctx.scorer.energy, request).energies
        ctx.show_progress(len(energies), len(scored), "samples scored")
    # The student was trained on neither the OOD batch nor the held-out training samples: the
    # energy gap between them says how far out of distribution the OOD batch lies.
    scored_energies = list(zip(scored, energies, strict=True))
    ood_energies = [e for s, e in scored_energies if s.kind == "ood"]
    holdout_energies = [e for s, e in scored_energies if s.kind == "train" and s.holdout]

    def write(session: Session) -> None:
        session.execute(
            update(Sample),
            [{"id": s.id, "energy": e} for s, e in scored_energies],
        )
        if ood_energies and holdout_energies:
            gap = float(np.mean(ood_energies) - np.mean(holdout_energies))
            upsert_metrics(session, ctx.run_id, iteration, {Diagnostic.OOD_ENERGY_GAP: gap})

    return Done({"scored": len(scored)}, write)


def select_feedback(ctx: RunContext, iteration: int) -> Done:
    """The OOD samples in the energy band, checked by the teacher (classification), become the
    next prompt's feedback: relabelled or left out as loop.feedback_check says, or all withheld
    while the teacher judges the task no better than chance (teacher.min_kappa)."""
    loop = ctx.spec.loop
    with ctx.sessions() as session:
        seeds = samples(session, ctx.run_id, kind="seed")
        scored = [
            (s, s.energy)
            for s in samples(session, ctx.run_id, iteration=iteration, kind="ood")
            if s.energy is not None
        ]
        earlier = judged_before(session, ctx.run_id, iteration)
    ood = [s for s, _ in scored]
    selected: list[int] = []
    checks: list[Checked] = []
    judgement: list[tuple[str, str]] = []
    withheld = False
    stats: dict[str, float] = {}
    if ood and loop.feedback_per_iteration > 0:
        request = SelectRequest(
            energies=[energy for _, energy in scored],
            band=loop.selection_band,
            labels=[s.label or "" for s in ood] if ctx.spec.task.labels else None,
            stratify=loop.stratify_selection,
        )
        if ctx.spec.task.type == "classification":
            judged = check_feedback(ctx, ood, seeds)  # the whole batch: the teacher's judgement
            judgement = [(requested_label(c.sample), c.teacher_label) for c in judged]
            kappa = teacher_kappa(earlier + judgement)
            withheld = not trusts_teacher(ctx.spec, kappa)
            stats = {Diagnostic.TEACHER_KAPPA: kappa, Diagnostic.FEEDBACK_WITHHELD: float(withheld)}
            band = set(ctx.call(ctx.scorer.select, request).selected)
            checks = [c for i, c in enumerate(judged) if i in band]
            checked_label = {c.sample.id: c.label for c in checks}
            request = request.model_copy(
                update={
                    "exclude": [i for i, c in enumerate(judged) if i in band and not c.keep],
                    "labels": [checked_label.get(s.id, s.label or "") for s in ood]
                    if request.labels
                    else None,
                }
            )
        if not withheld:
            request = request.model_copy(update={"count": loop.feedback_per_iteration})
            selected = ctx.call(ctx.scorer.select, request).selected
    chosen = {ood[i].id for i in selected}
    updates = [{"id": s.id, "selected": s.id in chosen} for s in ood]
    by_id = {u["id"]: u for u in updates}
    output_field = ctx.spec.task.output_field
    for check in [] if withheld else checks:  # a teacher at chance labels nothing
        update_row = by_id[check.sample.id]
        update_row["teacher_probs"] = check.probabilities
        if check.relabelled:  # the teacher's label, for the prompt and for training
            update_row["label"] = check.label
            update_row["fields"] = {**check.sample.fields, output_field: check.label}
    stats |= _feedback_stats(checks, chosen)

    def write(session: Session) -> None:
        session.execute(update(Sample), updates)
        if judgement:
            it = iteration_row(session, ctx.run_id, iteration)
            it.parse_stats = {**it.parse_stats, JUDGEMENT: judgement}
        if stats:
            upsert_metrics(session, ctx.run_id, iteration, stats)

    return Done({"selected": [str(i) for i in chosen], **stats}, write)


def judged_before(session: Session, run_id: uuid.UUID, iteration: int) -> list[tuple[str, str]]:
    stats = session.scalars(
        select(Iteration.parse_stats).where(Iteration.run_id == run_id, Iteration.index < iteration)
    )
    return [(requested, teacher) for s in stats for requested, teacher in (s or {}).get(JUDGEMENT, [])]


def _feedback_stats(checks: list[Checked], chosen: set[uuid.UUID]) -> dict[str, float]:
    if not checks:
        return {}
    fed = [c for c in checks if c.sample.id in chosen]
    return {
        Diagnostic.FEEDBACK_CHECKED: float(len(checks)),
        Diagnostic.FEEDBACK_TEACHER_AGREEMENT: sum(c.teacher_label == c.sample.label for c in checks)
        / len(checks),
        Diagnostic.FEEDBACK_RELABELLED: float(sum(c.relabelled for c in fed)),
        Diagnostic.FEEDBACK_DROPPED: float(sum(not c.keep for c in checks)),
        Diagnostic.FEEDBACK_CONTRADICTED: float(sum(c.teacher_label != c.label for c in fed)),
    }
