"""What a student run shows besides its headline metric, read from its iterations: the loop's
real-data curve, the pool's diversity, how far out the OOD batches lay and what the teacher's
check did to the feedback; and their means over repeats."""

from __future__ import annotations

import statistics
from typing import Any

from shared.diagnostics import diagnostic, diagnostic_series
from shared.names import Diagnostic
from shared.schemas.runs import RunSummary
from shared.spec import stored_spec

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
