"""The loop's diagnostics as the renderers read them (the run report, `gold`'s run table, `gold
eval`'s diagnostics table): through these two functions only, which take a Diagnostic name and
refuse any other, so a renamed diagnostic fails loudly instead of blanking a column."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared.names import Diagnostic
from shared.schemas.runs import IterationRead


def diagnostic(metrics: Mapping[str, float], name: Diagnostic) -> float | None:
    """One diagnostic among an iteration's metrics (or a results file's means of them); None where
    the run did not record it (a vanilla run has no feedback, a run without verification no
    teacher agreement). A name that is not a Diagnostic is a ValueError."""
    return metrics.get(Diagnostic(name))


def diagnostic_series(iterations: Iterable[IterationRead], name: Diagnostic) -> list[tuple[int, float]]:
    """(iteration, value) of one diagnostic over the iterations that recorded it."""
    return [(it.index, value) for it in iterations if (value := diagnostic(it.metrics, name)) is not None]
