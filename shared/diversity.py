"""How varied generated data is, in words and in a sentence-embedding space (unit-length vectors
from the scorer's /v1/embed): near-duplicate filtering against the pool, the distance of new
samples from the pool, and the spread and coverage of a set of samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Random hyperplanes through the seed examples' centroid split the embedding space into
# 2**COVERAGE_PLANES cells; coverage is the share of cells a pool occupies. The planes depend only
# on the dimension (a fixed seed), so gold and vanilla runs with the same seeds are measured alike.
COVERAGE_PLANES = 8
COVERAGE_SEED = 20240328


def input_text(fields: dict[str, str], input_fields: Sequence[str]) -> str:
    """What a sample is about: its input fields, the label left out."""
    return " \n ".join(fields.get(name, "") for name in input_fields)


def as_matrix(vectors: Sequence[Sequence[float]], dimensions: int = 0) -> np.ndarray:
    if not vectors:
        return np.zeros((0, dimensions), dtype=np.float32)
    return np.asarray(vectors, dtype=np.float32)


def nearest_similarity(new: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For each row of `new`, the cosine similarity of its nearest row in `pool` (-1 if empty)."""
    if len(pool) == 0 or len(new) == 0:
        return np.full(len(new), -1.0, dtype=np.float32)
    nearest: np.ndarray = (new @ pool.T).max(axis=1)
    return nearest


def novel_mask(new: np.ndarray, pool: np.ndarray, threshold: float) -> list[bool]:
    """Keep a new sample unless its similarity to the pool, or to a new sample kept before it, is
    `threshold` or more (greedy, in order)."""
    kept: list[np.ndarray] = []
    out = []
    for vector in new:
        against = np.vstack([pool, *kept]) if kept else pool
        similar = len(against) > 0 and float((against @ vector).max()) >= threshold
        out.append(not similar)
        if not similar:
            kept.append(vector[None, :])
    return out


def novelty(new: np.ndarray, pool: np.ndarray) -> float | None:
    """Mean cosine distance of new samples from their nearest pool sample: how far from what the
    student has seen they lie (0 = copies)."""
    if len(new) == 0 or len(pool) == 0:
        return None
    return float(np.mean(1.0 - nearest_similarity(new, pool)))


def spread(vectors: np.ndarray) -> float | None:
    """Mean pairwise cosine distance: higher = more spread out."""
    n = len(vectors)
    if n < 2:
        return None
    similarity = vectors @ vectors.T
    return float(1.0 - (similarity.sum() - np.trace(similarity)) / (n * (n - 1)))


def coverage(vectors: np.ndarray, anchors: np.ndarray) -> float | None:
    """Share of the cells (fixed random hyperplanes through the anchors' centroid) that hold at
    least one vector: grows as a pool reaches new regions, not as it repeats one."""
    if len(vectors) == 0 or len(anchors) == 0:
        return None
    planes = np.random.default_rng(COVERAGE_SEED).standard_normal((COVERAGE_PLANES, vectors.shape[1]))
    sides = ((vectors - anchors.mean(axis=0)) @ planes.T) > 0
    cells = {row.tobytes() for row in np.packbits(sides, axis=1)}
    return len(cells) / (1 << COVERAGE_PLANES)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams over all n-grams (Li et al. 2016): lower = more repetition."""
    grams = [
        tuple(t.lower().split()[i : i + n]) for t in texts for i in range(max(len(t.split()) - n + 1, 0))
    ]
    return len(set(grams)) / len(grams) if grams else 0.0
