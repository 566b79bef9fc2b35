"""The generated pool in the sentence-embedding space: embeddings from the scorer, near-duplicate
filtering of a new batch against the whole pool, and the novelty and diversity metrics recorded
per iteration (the same for gold and vanilla runs, so they can be compared)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.orchestrator.context import RunContext
from shared.db.models import Sample
from shared.diversity import as_matrix, coverage, distinct_n, input_text, novel_mask, novelty, spread
from shared.names import Diagnostic
from shared.schemas.generation import GeneratedSample
from shared.schemas.scoring import EmbedRequest

# Texts per scorer request: well inside its limits and timeouts on a CPU.
EMBED_BATCH = 256


def embed(ctx: RunContext, texts: Sequence[str]) -> np.ndarray:
    vectors: list[list[float]] = []
    for start in range(0, len(texts), EMBED_BATCH):
        request = EmbedRequest(texts=list(texts[start : start + EMBED_BATCH]))
        vectors += ctx.call(ctx.scorer.embed, request).embeddings
    return as_matrix(vectors)


def texts_of(ctx: RunContext, fields: Sequence[dict[str, str]]) -> list[str]:
    return [input_text(f, ctx.spec.task.input_fields) for f in fields]


def pool_matrix(ctx: RunContext, rows: Sequence[Sample]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The pool's embeddings, embedding the rows stored without one (the seeds, at first); returns
    the matrix and the row updates that store the new embeddings."""
    missing = [r for r in rows if r.embedding is None]
    fresh = embed(ctx, texts_of(ctx, [r.fields for r in missing])) if missing else as_matrix([])
    by_id: dict[uuid.UUID, list[float]] = {r.id: v.tolist() for r, v in zip(missing, fresh, strict=True)}
    updates: list[dict[str, Any]] = [{"id": id_, "embedding": vector} for id_, vector in by_id.items()]
    vectors = [r.embedding if r.embedding is not None else by_id[r.id] for r in rows]
    return as_matrix(vectors), updates


@dataclass
class Filtered:
    kept: list[GeneratedSample]
    vectors: np.ndarray  # of the kept samples
    near_duplicates: list[GeneratedSample]
    novelty: float | None  # mean cosine distance of the kept samples from the pool before them


def filter_batch(ctx: RunContext, samples: Sequence[GeneratedSample], pool: np.ndarray) -> Filtered:
    """Leave out samples too close to the pool or to an earlier sample of the batch."""
    vectors = embed(ctx, texts_of(ctx, [s.fields for s in samples])) if samples else as_matrix([])
    threshold = ctx.spec.loop.near_duplicate_similarity
    keep = novel_mask(vectors, pool, threshold) if threshold is not None else [True] * len(samples)
    kept = [s for s, k in zip(samples, keep, strict=True) if k]
    kept_vectors = vectors[np.asarray(keep, dtype=bool)] if len(samples) else vectors
    return Filtered(
        kept=kept,
        vectors=kept_vectors,
        near_duplicates=[s for s, k in zip(samples, keep, strict=True) if not k],
        novelty=novelty(kept_vectors, pool),
    )


def diversity_metrics(ctx: RunContext, rows: Sequence[Sample], iteration: int) -> dict[str, float]:
    """Diversity of this iteration's generated samples (distinct-2, embedding spread) and of the
    whole generated pool so far (spread, coverage of fixed cells around the seeds)."""
    seeds = as_matrix(_embeddings(r for r in rows if r.kind == "seed"))
    generated = [r for r in rows if r.kind != "seed" and r.embedding is not None and r.iteration <= iteration]
    current = [r for r in generated if r.iteration == iteration]
    pool = as_matrix(_embeddings(generated))
    values = {
        Diagnostic.DISTINCT_2: distinct_n(texts_of(ctx, [r.fields for r in current]), 2),
        Diagnostic.EMBEDDING_SPREAD: spread(as_matrix(_embeddings(current))),
        Diagnostic.POOL_SPREAD: spread(pool),
        Diagnostic.POOL_COVERAGE: coverage(pool, seeds),
        Diagnostic.NEAREST_NEIGHBOUR_SIMILARITY: _mean_nearest(pool),
    }
    return {name: value for name, value in values.items() if value is not None}


def _embeddings(rows: Iterable[Sample]) -> list[list[float]]:
    """The stored embeddings of these rows (rows without one are left out)."""
    return [r.embedding for r in rows if r.embedding is not None]


def _mean_nearest(pool: np.ndarray) -> float | None:
    """Mean similarity of each pool sample to its nearest other sample (high = clumped)."""
    if len(pool) < 2:
        return None
    similarity = pool @ pool.T
    np.fill_diagonal(similarity, -1.0)
    return float(similarity.max(axis=1).mean())
