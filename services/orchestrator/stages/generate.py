"""Generation stages: the teacher's attribute list (once per run) and each iteration's training
and OOD batches, filtered against the pool."""

from __future__ import annotations

import hashlib
import json
import random
import uuid

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from services.orchestrator import pool
from services.orchestrator.context import RunContext
from services.orchestrator.stages.done import Done
from services.orchestrator.stages.records import (
    iteration_row,
    samples,
    sampling,
    stage_seed,
)
from shared.db.metrics import upsert_metrics
from shared.db.models import Rejection, Sample, Step
from shared.names import Stage, near_duplicates, novelty
from shared.schemas.generation import (
    AttributesRequest,
    GenerateMode,
    GenerateRequest,
    GenerateResponse,
    ParseStats,
    Usage,
)
from shared.spec import RunSpec

# Samples per generator request: one request of a whole step (hundreds of samples) ran for many
# minutes on a CPU teacher with nothing to show; between chunks the run says how far it has got.
GENERATE_CHUNK = 16


def generate_train(ctx: RunContext, iteration: int) -> Done:
    return _generate(ctx, iteration, Stage.GENERATE_TRAIN, "train")


def generate_ood(ctx: RunContext, iteration: int) -> Done:
    return _generate(ctx, iteration, Stage.GENERATE_OOD, "ood")


def _generate(ctx: RunContext, iteration: int, stage: Stage, kind: GenerateMode) -> Done:
    spec = ctx.spec
    with ctx.sessions() as session:
        # Everything generated before this batch (a re-run of this step replaces its own batch).
        earlier = [s for s in samples(session, ctx.run_id) if (s.iteration, s.kind) != (iteration, kind)]
    seeds = [s for s in earlier if s.kind == "seed"]
    feedback = (
        [s for s in earlier if s.iteration == iteration - 1 and s.kind == "ood" and s.selected]
        if kind == "train"
        else []
    )
    fresh = [s for s in earlier if s.iteration == iteration and s.kind == "train"] if kind == "ood" else []
    # The OOD prompt shows a couple of the samples just generated next to the seeds (method).
    shown = random.Random(stage_seed(spec, iteration, "shown")).sample(fresh, k=min(2, len(fresh)))
    examples = seeds + shown
    n = spec.loop.train_samples_per_iteration if kind == "train" else spec.loop.ood_samples_per_iteration
    # The request each chunk copies: a step may ask for more samples (the spec allows 10000) than
    # one generator request may (512), so the step's n is the chunks' business.
    request = GenerateRequest(
        task=spec.task,
        model=spec.teacher.served_model,
        examples=[s.fields for s in examples],
        feedback=[s.fields for s in feedback],
        feedback_per_prompt=spec.loop.feedback_per_prompt,
        feedback_same_label=spec.loop.feedback_same_label,
        n=min(n, GENERATE_CHUNK),
        mode=kind,
        sampling=sampling(spec, iteration, stage),
        exclude_hashes=[s.text_hash for s in earlier if s.text_hash],
        attributes=_attributes(ctx) if kind == "ood" else [],
        structured=spec.teacher.structured,
    )
    response = _generate_in_chunks(ctx, request, n)
    pool_vectors, embedded = pool.pool_matrix(ctx, earlier)
    batch = pool.filter_batch(ctx, response.samples, pool_vectors)

    holdout = _holdout_positions(spec, iteration, len(batch.kept)) if kind == "train" else set()
    rows = [
        {
            "id": uuid.uuid4(),
            "run_id": ctx.run_id,
            "iteration": iteration,
            "kind": kind,
            "position": position,
            "fields": sample.fields,
            "label": sample.label,
            "requested_label": sample.label,
            "text_hash": sample.text_hash,
            "holdout": position in holdout,
            "embedding": vector.tolist(),
            "prompt_examples": {
                "seeds": [examples[i].position for i in sample.prompt.examples if examples[i].kind == "seed"],
                "samples": [
                    str(examples[i].id) for i in sample.prompt.examples if examples[i].kind != "seed"
                ],
                "feedback": [str(feedback[i].id) for i in sample.prompt.feedback],
                "attribute": sample.prompt.attribute,
            },
        }
        for position, (sample, vector) in enumerate(zip(batch.kept, batch.vectors, strict=True))
    ]
    rejections = [(r.reason, r.text) for r in response.rejections] + [
        ("near_duplicate_of_pool", json.dumps(s.fields)) for s in batch.near_duplicates
    ]
    stats = response.stats.model_dump()
    if batch.near_duplicates:
        stats["accepted"] = len(rows)
        stats["rejected"] = {**stats["rejected"], "near_duplicate_of_pool": len(batch.near_duplicates)}
    stats["settings"] = response.settings.model_dump()
    stats["usage"] = response.usage.model_dump()

    def write(session: Session) -> None:
        # A crashed attempt leaves nothing (one transaction), but be explicit about re-runs.
        for model in (Sample, Rejection):
            session.execute(
                delete(model).where(
                    model.run_id == ctx.run_id, model.iteration == iteration, model.kind == kind
                )
            )
        if embedded:
            session.execute(update(Sample), embedded)
        if rows:
            session.execute(Sample.__table__.insert(), rows)
        if rejections:
            session.execute(
                Rejection.__table__.insert(),
                [
                    {
                        "id": uuid.uuid4(),
                        "run_id": ctx.run_id,
                        "iteration": iteration,
                        "kind": kind,
                        "reason": reason,
                        "text": text,
                    }
                    for reason, text in rejections
                ],
            )
        it = iteration_row(session, ctx.run_id, iteration)
        it.parse_stats = {**it.parse_stats, kind: stats}
        metrics = pool.diversity_metrics(ctx, samples(session, ctx.run_id), iteration)
        if batch.novelty is not None:
            metrics[novelty(kind)] = batch.novelty
        metrics[near_duplicates(kind)] = float(len(batch.near_duplicates))
        upsert_metrics(session, ctx.run_id, iteration, metrics)

    # An OOD batch may come back empty (a small teacher's deliberately different samples often fail
    # the task's checks, e.g. an answer that is not in its passage): the iteration then feeds nothing
    # back, its rejections say why, and the run goes on. Training data is needed: none fails the step.
    failure = (
        None
        if rows or kind == "ood"
        else f"generator returned no usable {kind} samples: rejected {stats['rejected']}"
    )
    return Done({"accepted": len(rows), "requested": n}, write, failure=failure)


def _generate_in_chunks(ctx: RunContext, request: GenerateRequest, n: int) -> GenerateResponse:
    """The step's n samples as requests of GENERATE_CHUNK samples (copies of `request`), the run
    showing after each how many are generated. Deterministic as one request is: chunk k's seed
    derives from the step's (the first chunk keeps it), classification labels are dealt over the
    whole step in turn (each chunk balanced), and each chunk excludes what the chunks before it
    produced."""
    seed = request.sampling.seed
    sizes = [min(GENERATE_CHUNK, n - start) for start in range(0, n, GENERATE_CHUNK)]
    labels = request.task.labels if request.task.type == "classification" and len(sizes) > 1 else None
    responses: list[GenerateResponse] = []
    done = 0
    for k, size in enumerate(sizes):
        chunk = request.model_copy(
            update={
                "n": size,
                "labels": [labels[i % len(labels)] for i in range(done, done + size)] if labels else None,
                "sampling": request.sampling.model_copy(
                    update={"seed": seed if k == 0 or seed is None else chunk_seed(seed, k)}
                ),
                "exclude_hashes": request.exclude_hashes
                + [s.text_hash for r in responses for s in r.samples],
            }
        )
        responses.append(ctx.call(ctx.generator.generate, chunk))
        done += size
        ctx.show_progress(done, n, "samples generated")
    return _merged(responses, seed)


def chunk_seed(seed: int, chunk: int) -> int:
    digest = hashlib.sha256(f"{seed}/chunk/{chunk}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _merged(responses: list[GenerateResponse], seed: int | None) -> GenerateResponse:
    """The chunks' answers as the one answer of the step's request (the step's seed reported)."""
    rejected: dict[str, int] = {}
    for r in responses:
        for reason, count in r.stats.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + count
    return GenerateResponse(
        samples=[s for r in responses for s in r.samples],
        stats=ParseStats(
            requested=sum(r.stats.requested for r in responses),
            completions=sum(r.stats.completions for r in responses),
            accepted=sum(r.stats.accepted for r in responses),
            rejected=rejected,
        ),
        rejections=[x for r in responses for x in r.rejections],
        usage=Usage(
            prompt_tokens=sum(r.usage.prompt_tokens for r in responses),
            completion_tokens=sum(r.usage.completion_tokens for r in responses),
        ),
        settings=responses[0].settings.model_copy(update={"seed": seed}),
    )


def list_attributes(ctx: RunContext, iteration: int) -> Done:
    """The teacher lists what the task's data could be about, once per run; OOD prompts draw them."""
    request = AttributesRequest(
        task=ctx.spec.task,
        model=ctx.spec.teacher.served_model,
        n=ctx.spec.loop.ood_attributes,
        sampling=sampling(ctx.spec, 0, Stage.ATTRIBUTES).model_copy(
            update={"temperature": 0.9, "max_tokens": 96}
        ),
    )
    response = ctx.call(ctx.generator.attributes, request)
    return Done({"attributes": response.attributes, "usage": response.usage.model_dump()})


def _attributes(ctx: RunContext) -> list[str]:
    with ctx.sessions() as session:
        step = session.get(Step, (ctx.run_id, 0, Stage.ATTRIBUTES))
    return list(step.result.get("attributes", [])) if step is not None else []


def _holdout_positions(spec: RunSpec, iteration: int, count: int) -> set[int]:
    k = int(round(count * spec.loop.holdout_fraction))
    return set(random.Random(stage_seed(spec, iteration, "holdout")).sample(range(count), k=min(k, count)))
