"""Teacher verification of each iteration's generated labels (verification.policy)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from services.orchestrator.context import RunContext, StepFailed
from services.orchestrator.feedback import (
    decide_label,
    requested_label,
    teacher_distributions,
    teacher_kappa,
    top_label,
    trusts_teacher,
)
from services.orchestrator.stages.done import Done
from services.orchestrator.stages.records import iteration_row, samples
from shared.db.metrics import upsert_metrics
from shared.db.models import Sample
from shared.names import Diagnostic


def verify_labels(ctx: RunContext, iteration: int) -> Done:
    """The teacher scores every generated sample's label by likelihood; the run's policy keeps,
    relabels or leaves out disagreements. Nothing is deleted: left-out samples are marked. A teacher
    whose labels agree with the requested ones no better than chance (teacher.min_kappa, over this
    batch) changes nothing: its distributions are not stored, so no student distils them either."""
    spec = ctx.spec
    policy = spec.verification
    output_field = spec.task.output_field
    with ctx.sessions() as session:
        seeds = samples(session, ctx.run_id, kind="seed")
        generated = samples(session, ctx.run_id, iteration=iteration, kind="train") + samples(
            session, ctx.run_id, iteration=iteration, kind="ood"
        )
    if not generated:
        raise StepFailed(f"iteration {iteration} has no samples to verify")
    judged = teacher_distributions(ctx, generated, seeds)
    kappa = teacher_kappa(
        [(requested_label(s), top_label(p)) for s, p in zip(generated, judged, strict=True)]
    )
    trusted = trusts_teacher(spec, kappa)
    # A teacher at chance changes nothing: the requested labels stay, none is left out.
    rule, floor = (policy.policy, policy.min_confidence) if trusted else ("keep", 0.0)
    updates, agree, kept_agree, confidences = [], 0, 0, []
    for sample, probabilities in zip(generated, judged, strict=True):
        requested = requested_label(sample)
        d = decide_label(probabilities, requested, rule, floor)
        agree += d.teacher_label == requested
        confidences.append(d.confidence)
        kept_agree += d.keep and d.teacher_label == d.label
        updates.append(
            {
                "id": sample.id,
                "label": d.label,
                "fields": {**sample.fields, output_field: d.label},
                "teacher_probs": probabilities if trusted else None,
                "excluded": not d.keep,
            }
        )
    kept = sum(not u["excluded"] for u in updates)
    # the generator's label fidelity: the teacher's likelihood label is the one it was asked for
    agreement = agree / len(generated)
    # the same for the samples trained on, with the labels they are trained on
    fidelity_after = kept_agree / kept if kept else 0.0
    excluded = len(updates) - kept
    mean_confidence = sum(confidences) / len(confidences)
    stats: dict[str, Any] = {
        "policy": policy.policy,
        "agreement": agreement,
        "fidelity_after": fidelity_after,
        "excluded": excluded,
        "mean_confidence": mean_confidence,
        "kappa": kappa,
        "trusted": trusted,
        "confidence_histogram": [int(c) for c in np.histogram(confidences, bins=10, range=(0.0, 1.0))[0]],
    }

    def write(session: Session) -> None:
        session.execute(update(Sample), updates)
        it = iteration_row(session, ctx.run_id, iteration)
        it.parse_stats = {**it.parse_stats, "verification": stats}
        upsert_metrics(
            session,
            ctx.run_id,
            iteration,
            {
                Diagnostic.TEACHER_AGREEMENT: agreement,
                Diagnostic.LABEL_FIDELITY_AFTER_VERIFICATION: fidelity_after,
                Diagnostic.VERIFIED_EXCLUDED: float(excluded),
                Diagnostic.TEACHER_MEAN_CONFIDENCE: mean_confidence,
                Diagnostic.VERIFICATION_KAPPA: kappa,
                Diagnostic.VERIFICATION_WITHHELD: float(not trusted),
            },
        )

    return Done(stats, write)
