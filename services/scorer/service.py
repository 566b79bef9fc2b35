"""Scorer logic: energies for a checkpoint's samples, a checkpoint's predictions, energy-band
selection, and sentence embeddings."""

from __future__ import annotations

import math
from collections import defaultdict
from functools import partial

import anyio
import numpy as np

from services.scorer.embedding import TextEncoder
from services.scorer.engine import MissingField, ModelCache
from shared.artifacts import ArtifactStore
from shared.errors import InvalidInput
from shared.schemas.prediction import CheckpointPredictRequest, CheckpointPredictResponse
from shared.schemas.scoring import (
    EmbedRequest,
    EmbedResponse,
    EnergyRequest,
    EnergyResponse,
    SelectRequest,
    SelectResponse,
)


def _energies(request: EnergyRequest, cache: ModelCache, artifacts: ArtifactStore) -> EnergyResponse:
    folder = artifacts.fetch(request.checkpoint_id)  # downloaded from a remote store; or a 404
    model = cache.get(str(request.checkpoint_id), folder)
    try:
        energies = model.energy(request.samples, request.temperature, request.pad_mode)
    except MissingField as exc:
        raise InvalidInput(
            f"samples.{exc.index}.{exc.field}", f"this {model.kind} student needs the field"
        ) from exc
    return EnergyResponse(checkpoint_id=request.checkpoint_id, energies=energies, student_kind=model.kind)


async def compute_energies(
    request: EnergyRequest, *, cache: ModelCache, artifacts: ArtifactStore, limiter: anyio.CapacityLimiter
) -> EnergyResponse:
    """Downloads, model loading and forward passes run in a worker thread, never on the event loop."""
    return await anyio.to_thread.run_sync(partial(_energies, request, cache, artifacts), limiter=limiter)


def _predictions(
    request: CheckpointPredictRequest, cache: ModelCache, artifacts: ArtifactStore
) -> CheckpointPredictResponse:
    folder = artifacts.fetch(request.checkpoint_id)  # downloaded from a remote store; or a 404
    model = cache.get(str(request.checkpoint_id), folder)  # the copy energies use, loaded once
    try:
        predictions = model.predict(request.inputs)
    except MissingField as exc:
        raise InvalidInput(
            f"inputs.{exc.index}.{exc.field}", "every input needs each of the task's input fields"
        ) from exc
    return CheckpointPredictResponse(
        checkpoint_id=request.checkpoint_id, student_kind=model.kind, predictions=predictions
    )


async def predict(
    request: CheckpointPredictRequest,
    *,
    cache: ModelCache,
    artifacts: ArtifactStore,
    limiter: anyio.CapacityLimiter,
) -> CheckpointPredictResponse:
    """The student's answers, decoded in a worker thread under the energies' limiter."""
    return await anyio.to_thread.run_sync(partial(_predictions, request, cache, artifacts), limiter=limiter)


def _embed(request: EmbedRequest, encoder: TextEncoder) -> EmbedResponse:
    vectors = encoder.embed(request.texts)
    return EmbedResponse(model=encoder.name, dimensions=vectors.shape[1], embeddings=vectors.tolist())


async def embed_texts(
    request: EmbedRequest, *, encoder: TextEncoder, limiter: anyio.CapacityLimiter
) -> EmbedResponse:
    """The encoder's first load and its forward passes run in a worker thread, under the same
    limiter as the energies (they share the CPU or GPU)."""
    return await anyio.to_thread.run_sync(partial(_embed, request, encoder), limiter=limiter)


def band_positions(n: int, low: float, high: float) -> range:
    """Sorted positions [floor(low n), floor(high n)): the reference code's band ([0.5, 0.8) of 8 = 2).
    A band narrower than one of few samples ([0.5, 0.8) of 2) keeps the sample at its low edge rather
    than feeding nothing back."""
    eps = 1e-9  # 0.29 * 100 is 28.999999999999996 in floating point
    start, stop = math.floor(low * n + eps), min(n, math.floor(high * n + eps))
    if stop <= start and n > 0:
        start = min(start, n - 1)
        stop = start + 1
    return range(start, stop)


def _spread(items: list[int], count: int | None) -> list[int]:
    """At most `count` items, evenly spread over the band (not only its low edge)."""
    if count is None or len(items) <= count:
        return items
    return [items[math.floor((j + 0.5) * len(items) / count)] for j in range(count)]


def _quotas(pools: dict[str, int], count: int) -> dict[str, int]:
    """Share `count` across labels as evenly as their band sizes allow."""
    quota = dict.fromkeys(pools, 0)
    left = count
    while left > 0:
        open_labels = sorted(
            (k for k in pools if quota[k] < pools[k]), key=lambda k: (quota[k], -pools[k], k)
        )
        if not open_labels:
            break
        quota[open_labels[0]] += 1
        left -= 1
    return quota


def select_band(request: SelectRequest) -> SelectResponse:
    energies = np.asarray(request.energies, dtype=np.float64)
    if not np.isfinite(energies).all():
        raise InvalidInput("energies", "every energy must be a finite number")
    low, high = request.band
    if request.labels is not None and len(request.labels) != len(energies):
        raise InvalidInput(
            "labels", f"needs one label per energy ({len(energies)}), got {len(request.labels)}"
        )
    if request.stratify and request.labels is None:
        raise InvalidInput("labels", "stratified selection needs the labels")
    outside = sorted({i for i in request.exclude if not 0 <= i < len(energies)})
    if outside:
        raise InvalidInput(
            "exclude", f"indices {outside[:5]} are not positions of the {len(energies)} energies"
        )
    excluded = set(request.exclude)

    def ascending(indices: list[int]) -> list[int]:
        return sorted(indices, key=lambda i: (energies[i], i))

    if request.stratify:
        assert request.labels is not None
        groups: dict[str, list[int]] = defaultdict(list)
        for i, label in enumerate(request.labels):
            groups[label].append(i)
        bands = {}
        for label, members in groups.items():
            ranked = ascending(members)
            bands[label] = [
                ranked[p] for p in band_positions(len(ranked), low, high) if ranked[p] not in excluded
            ]
        quotas = (
            _quotas({k: len(v) for k, v in bands.items()}, request.count) if request.count is not None else {}
        )
        selected = [i for label, band in bands.items() for i in _spread(band, quotas.get(label, None))]
    else:
        ranked = ascending(list(range(len(energies))))
        band = [ranked[p] for p in band_positions(len(ranked), low, high)]
        selected = _spread([i for i in band if i not in excluded], request.count)
    return SelectResponse(
        selected=ascending(selected),
        low_energy=float(np.quantile(energies, low)),
        high_energy=float(np.quantile(energies, high)),
    )
