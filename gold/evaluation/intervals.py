"""The statistics of repeated measurements: the 95% Student t interval of a mean, and the mean,
interval and win count of paired differences."""

from __future__ import annotations

import math
import statistics
from typing import Any

from scipy.stats import t


def t_interval(values: list[float]) -> list[float] | None:
    """The 95% Student t interval of the mean; None under two values (no spread to measure)."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return [mean - half, mean + half]


def paired_statistics(differences: list[float]) -> dict[str, Any]:
    """Mean, 95% t-interval and win count of paired differences a - b."""
    return {
        "n": len(differences),
        "mean": statistics.fmean(differences) if differences else None,
        "ci95": t_interval(differences),
        "wins": sum(d > 0 for d in differences),
        "ties": sum(d == 0 for d in differences),
        "losses": sum(d < 0 for d in differences),
        "differences": differences,
    }
