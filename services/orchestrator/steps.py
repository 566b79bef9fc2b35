"""One function per stage of a GOLD iteration. Each is idempotent: it writes its results and marks
its step done in ONE transaction, so a step interrupted by a crash leaves nothing and runs again."""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from rq import Queue
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.plan import (
    FINAL_TRAIN,
    GENERATE_TRAIN,
    REFERENCE_TRAIN,
    SCORE,
    SELECT,
    TRAIN,
    VERIFY,
)
from shared.clients import GeneratorClient, ScorerClient
from shared.db.base import utcnow
from shared.db.models import Iteration, Metric, Rejection, Sample, Step
from shared.errors import UpstreamError
from shared.evaluation_data import load_evaluation
from shared.jobs import enqueue_train
from shared.schemas.generation import AnswerRequest, ClassifyRequest, GenerateRequest, SamplingSettings
from shared.schemas.scoring import EnergyRequest, SelectRequest
from shared.schemas.training import TrainJob, TrainResult, TrainRole
from shared.spec import RunSpec
from shared.task_metrics import task_scores

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RunCancelled(Exception):
    pass


class StepFailed(Exception):
    """A step failed for good: the run fails with this message."""


@dataclass
class RunContext:
    run_id: uuid.UUID
    spec: RunSpec
    sessions: sessionmaker[Session]
    generator: GeneratorClient
    scorer: ScorerClient
    train_queue: Queue
    settings: OrchestratorSettings
    # Called often while waiting: renews the run's lease, raises RunCancelled when cancelled.
    heartbeat: Callable[[], None]
    # Runs service calls so the driver can keep heart-beating (and notice a cancel) meanwhile.
    calls: ThreadPoolExecutor

    def call(self, fn: Callable[[Any], T], request: Any) -> T:
        """Call a service with retries and backoff until the deadline, staying cancellable."""

        def attempt() -> T:
            return _cancellable(self, fn, request)

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, UpstreamError) and e.retryable),
            wait=wait_exponential(multiplier=1, min=1, max=20),
            stop=stop_after_delay(self.settings.upstream_deadline_s),
            before_sleep=lambda state: logger.warning(
                "run %s: %s (attempt %d), retrying",
                self.run_id,
                state.outcome.exception(),
                state.attempt_number,
            ),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except UpstreamError as exc:
            if exc.retryable:
                raise StepFailed(
                    f"{exc.message} (gave up after {self.settings.upstream_deadline_s:.0f} s)"
                ) from exc
            raise StepFailed(exc.message) from exc


def _cancellable(ctx: RunContext, fn: Callable[[Any], T], request: Any) -> T:
    future = ctx.calls.submit(fn, request)
    while True:
        try:
            return future.result(timeout=1.0)
        except FutureTimeout:
            ctx.heartbeat()  # raises RunCancelled; the abandoned call's answer is ignored


def mark_done(
    session: Session,
    ctx: RunContext,
    iteration: int,
    stage: str,
    result: dict[str, Any],
    status: Literal["done", "skipped"] = "done",
) -> None:
    stmt = pg_insert(Step).values(
        run_id=ctx.run_id,
        iteration=iteration,
        stage=stage,
        status=status,
        result=result,
        finished_at=utcnow(),
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["run_id", "iteration", "stage"],
            set_={"status": status, "result": result, "finished_at": utcnow(), "error": None},
        )
    )


def _stage_seed(spec: RunSpec, iteration: int, stage: str) -> int:
    digest = hashlib.sha256(f"{spec.teacher.seed}/{iteration}/{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _sampling(spec: RunSpec, iteration: int, stage: str) -> SamplingSettings:
    teacher = spec.teacher
    return SamplingSettings(
        temperature=teacher.temperature,
        top_p=teacher.top_p,
        top_k=teacher.top_k,
        max_tokens=teacher.max_tokens,
        seed=_stage_seed(spec, iteration, stage),
    )


def _samples(session: Session, run_id: uuid.UUID, **filters: Any) -> list[Sample]:
    query = select(Sample).where(Sample.run_id == run_id).order_by(Sample.iteration, Sample.position)
    for name, value in filters.items():
        query = query.where(getattr(Sample, name) == value)
    return list(session.scalars(query))


def generate(ctx: RunContext, iteration: int, stage: str) -> dict[str, Any]:
    spec = ctx.spec
    kind = "train" if stage == GENERATE_TRAIN else "ood"
    with ctx.sessions() as session:
        seeds = _samples(session, ctx.run_id, kind="seed")
        feedback = (
            _samples(session, ctx.run_id, iteration=iteration - 1, kind="ood", selected=True)
            if kind == "train" and iteration > 1
            else []
        )
        earlier_hashes = [
            h for h in session.scalars(select(Sample.text_hash).where(Sample.run_id == ctx.run_id)) if h
        ]
        fresh = _samples(session, ctx.run_id, iteration=iteration, kind="train") if kind == "ood" else []
    # The OOD prompt shows a couple of the samples just generated next to the seeds (method).
    shown = random.Random(_stage_seed(spec, iteration, "shown")).sample(fresh, k=min(2, len(fresh)))
    examples = seeds + shown
    request = GenerateRequest(
        task=spec.task,
        examples=[s.fields for s in examples],
        feedback=[s.fields for s in feedback],
        n=spec.loop.train_samples_per_iteration if kind == "train" else spec.loop.ood_samples_per_iteration,
        mode=kind,
        sampling=_sampling(spec, iteration, stage),
        exclude_hashes=earlier_hashes,
    )
    response = ctx.call(ctx.generator.generate, request)

    holdout = _holdout_positions(spec, iteration, len(response.samples)) if kind == "train" else set()
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
            "prompt_examples": {
                "seeds": [examples[i].position for i in sample.prompt.examples if examples[i].kind == "seed"],
                "samples": [
                    str(examples[i].id) for i in sample.prompt.examples if examples[i].kind != "seed"
                ],
                "feedback": [str(feedback[i].id) for i in sample.prompt.feedback],
            },
        }
        for position, sample in enumerate(response.samples)
    ]
    stats = response.stats.model_dump()
    stats["settings"] = response.settings.model_dump()
    stats["usage"] = response.usage.model_dump()
    with ctx.sessions() as session, session.begin():
        # A crashed attempt leaves nothing (one transaction), but be explicit about re-runs.
        for model in (Sample, Rejection):
            session.execute(
                delete(model).where(
                    model.run_id == ctx.run_id, model.iteration == iteration, model.kind == kind
                )
            )
        if rows:
            session.execute(Sample.__table__.insert(), rows)
        if response.rejections:
            session.execute(
                Rejection.__table__.insert(),
                [
                    {
                        "id": uuid.uuid4(),
                        "run_id": ctx.run_id,
                        "iteration": iteration,
                        "kind": kind,
                        "reason": r.reason,
                        "text": r.text,
                    }
                    for r in response.rejections
                ],
            )
        it = iteration_row(session, ctx.run_id, iteration)
        it.parse_stats = {**it.parse_stats, kind: stats}
        mark_done(session, ctx, iteration, stage, {"accepted": len(rows), "requested": request.n})
    if not rows:
        raise StepFailed(f"generator returned no usable {kind} samples: rejected {response.stats.rejected}")
    return {"accepted": len(rows)}


def verify_labels(ctx: RunContext, iteration: int) -> dict[str, Any]:
    """The teacher scores every generated sample's label by likelihood; the run's policy keeps,
    relabels or leaves out disagreements. Nothing is deleted: left-out samples are marked."""
    spec = ctx.spec
    policy = spec.verification
    output_field = spec.task.output_field
    with ctx.sessions() as session:
        seeds = _samples(session, ctx.run_id, kind="seed")
        generated = _samples(session, ctx.run_id, iteration=iteration, kind="train") + _samples(
            session, ctx.run_id, iteration=iteration, kind="ood"
        )
    if not generated:
        raise StepFailed(f"iteration {iteration} has no samples to verify")
    request = ClassifyRequest(
        task=spec.task,
        examples=[s.fields for s in seeds],
        inputs=[{f: s.fields[f] for f in spec.task.input_fields} for s in generated],
    )
    predictions = ctx.call(ctx.generator.classify, request).predictions
    updates, agree, kept_agree, confidences = [], 0, 0, []
    for sample, prediction in zip(generated, predictions, strict=True):
        requested = sample.requested_label or sample.label
        agree += prediction.label == requested
        label = prediction.label if policy.policy == "relabel" else requested
        confidence = prediction.probabilities.get(label or "", 0.0)
        confidences.append(confidence)
        excluded = (
            policy.policy == "drop" and prediction.label != requested
        ) or confidence < policy.min_confidence
        kept_agree += not excluded and prediction.label == label
        updates.append(
            {
                "id": sample.id,
                "label": label,
                "fields": {**sample.fields, output_field: label},
                "teacher_probs": prediction.probabilities,
                "excluded": excluded,
            }
        )
    kept = sum(not u["excluded"] for u in updates)
    stats = {
        "policy": policy.policy,
        # the generator's label fidelity: the teacher's likelihood label is the one it was asked for
        "agreement": agree / len(generated),
        # the same for the samples trained on, with the labels they are trained on
        "fidelity_after": kept_agree / kept if kept else 0.0,
        "excluded": len(updates) - kept,
        "mean_confidence": sum(confidences) / len(confidences),
        "confidence_histogram": [int(c) for c in np.histogram(confidences, bins=10, range=(0.0, 1.0))[0]],
    }
    with ctx.sessions() as session, session.begin():
        session.execute(update(Sample), updates)
        it = iteration_row(session, ctx.run_id, iteration)
        it.parse_stats = {**it.parse_stats, "verification": stats}
        upsert_metrics(
            session,
            ctx.run_id,
            iteration,
            {
                "teacher_agreement": stats["agreement"],
                "label_fidelity_after_verification": stats["fidelity_after"],
                "verified_excluded": float(stats["excluded"]),
                "teacher_mean_confidence": stats["mean_confidence"],
            },
        )
        mark_done(session, ctx, iteration, VERIFY, stats)
    return stats


def _holdout_positions(spec: RunSpec, iteration: int, count: int) -> set[int]:
    k = int(round(count * spec.loop.holdout_fraction))
    return set(random.Random(_stage_seed(spec, iteration, "holdout")).sample(range(count), k=min(k, count)))


def iteration_row(session: Session, run_id: uuid.UUID, index: int) -> Iteration:
    it = session.scalar(
        select(Iteration).where(Iteration.run_id == run_id, Iteration.index == index).with_for_update()
    )
    if it is None:
        session.execute(
            pg_insert(Iteration)
            .values(
                id=uuid.uuid4(),
                run_id=run_id,
                index=index,
                status="running",
                started_at=utcnow(),
                parse_stats={},
                timings={},
                created_at=utcnow(),
            )
            .on_conflict_do_nothing()
        )
        it = session.scalar(
            select(Iteration).where(Iteration.run_id == run_id, Iteration.index == index).with_for_update()
        )
    assert it is not None
    return it


STAGE_OF_ROLE = {"loop": TRAIN, "final": FINAL_TRAIN, "reference": REFERENCE_TRAIN}


def train(ctx: RunContext, iteration: int, role: TrainRole) -> dict[str, Any]:
    init = None
    if role == "loop" and ctx.spec.student.continue_training and iteration > 1:
        with ctx.sessions() as session:
            previous = session.scalar(
                select(Iteration.checkpoint_id).where(
                    Iteration.run_id == ctx.run_id, Iteration.index == iteration - 1
                )
            )
        init = str(previous) if previous else None
    job = TrainJob(run_id=str(ctx.run_id), iteration=iteration, role=role, init_checkpoint_id=init)
    result = _run_train_job(ctx, job)
    with ctx.sessions() as session, session.begin():
        if role != "reference":  # the reference student is a yardstick, not the iteration's student
            iteration_row(session, ctx.run_id, iteration).checkpoint_id = uuid.UUID(result.checkpoint_id)
        mark_done(session, ctx, iteration, STAGE_OF_ROLE[role], result.model_dump())
    return {"checkpoint_id": result.checkpoint_id}


def _run_train_job(ctx: RunContext, job: TrainJob) -> TrainResult:
    last_error = "unknown"
    for attempt in range(1, ctx.settings.train_attempts + 1):
        rq_job = enqueue_train(ctx.train_queue, job)
        while True:
            status = rq_job.get_status(refresh=True)
            if status == "finished":
                return TrainResult.model_validate(rq_job.return_value())
            if status in ("failed", "stopped", "canceled") or status is None:
                last_error = (rq_job.exc_info or "job lost").strip().splitlines()[-1]
                logger.warning("run %s: training attempt %d failed: %s", ctx.run_id, attempt, last_error)
                break
            try:
                ctx.heartbeat()
            except RunCancelled:
                rq_job.cancel()
                raise
            time.sleep(1.0)
    raise StepFailed(
        f"trainer: training failed {ctx.settings.train_attempts} times; last error: {last_error}"
    )


def score(ctx: RunContext, iteration: int) -> dict[str, Any]:
    """Free energy of the iteration's OOD samples (for selection) and, for the report, of its
    training samples, under the student just trained."""
    with ctx.sessions() as session:
        scored = _samples(session, ctx.run_id, iteration=iteration, kind="ood") + _samples(
            session, ctx.run_id, iteration=iteration, kind="train"
        )
        checkpoint_id = session.scalar(
            select(Iteration.checkpoint_id).where(
                Iteration.run_id == ctx.run_id, Iteration.index == iteration
            )
        )
    if checkpoint_id is None:
        raise StepFailed(f"iteration {iteration} has no student checkpoint to score with")
    request = EnergyRequest(
        checkpoint_id=checkpoint_id,
        samples=[s.fields for s in scored],
        temperature=ctx.spec.loop.energy_temperature,
    )
    response = ctx.call(ctx.scorer.energy, request)
    with ctx.sessions() as session, session.begin():
        session.execute(
            update(Sample),
            [{"id": s.id, "energy": e} for s, e in zip(scored, response.energies, strict=True)],
        )
        mark_done(session, ctx, iteration, SCORE, {"scored": len(scored)})
    return {"scored": len(scored)}


def select_feedback(ctx: RunContext, iteration: int) -> dict[str, Any]:
    with ctx.sessions() as session:
        ood = [
            s for s in _samples(session, ctx.run_id, iteration=iteration, kind="ood") if s.energy is not None
        ]
    selected: list[int] = []
    if ood and ctx.spec.loop.feedback_per_iteration > 0:
        request = SelectRequest(
            energies=[s.energy for s in ood],
            band=ctx.spec.loop.selection_band,
            count=ctx.spec.loop.feedback_per_iteration,
            labels=[s.label or "" for s in ood] if ctx.spec.task.labels else None,
            stratify=ctx.spec.loop.stratify_selection,
        )
        selected = ctx.call(ctx.scorer.select, request).selected
    chosen = {ood[i].id for i in selected}
    with ctx.sessions() as session, session.begin():
        session.execute(
            update(Sample),
            [{"id": s.id, "selected": s.id in chosen} for s in ood],
        )
        mark_done(session, ctx, iteration, SELECT, {"selected": [str(i) for i in chosen]})
    return {"selected": len(chosen)}


# Evaluation inputs per generator request: each answers well inside the client timeout on a CPU teacher.
TEACHER_BATCH = 32


def _teacher_answers(ctx: RunContext, inputs: list[dict[str, str]]) -> tuple[list[str], int | None]:
    """The teacher's few-shot answers (labels for classification), and its parameter count."""
    task = ctx.spec.task
    answers: list[str] = []
    parameters = None
    for start in range(0, len(inputs), TEACHER_BATCH):
        batch = inputs[start : start + TEACHER_BATCH]
        if task.type == "classification":
            labelled = ctx.call(ctx.generator.classify, ClassifyRequest(task=task, inputs=batch))
            answers += [p.label for p in labelled.predictions]
            parameters = labelled.parameters
        else:
            request = AnswerRequest(task=task, inputs=batch, max_tokens=ctx.spec.teacher.max_tokens)
            answered = ctx.call(ctx.generator.answer, request)
            answers += answered.answers
            parameters = answered.parameters
    return answers, parameters


def teacher_eval(ctx: RunContext) -> dict[str, Any]:
    """The teacher answering the evaluation data few-shot from the seed examples, scored with the
    students' metrics (teacher_eval_accuracy, teacher_eval_f1, ...)."""
    spec = ctx.spec
    assert spec.evaluation is not None
    rows = load_evaluation(spec.evaluation, spec.task).examples
    if not rows:
        raise StepFailed(f"evaluation.path {spec.evaluation.path}: no usable rows")
    started = time.monotonic()
    answers, parameters = _teacher_answers(ctx, [r.fields for r in rows])
    seconds = time.monotonic() - started
    scores = task_scores(spec.task.type, answers, [r.references for r in rows], spec.task.labels or [])
    metrics = {f"teacher_eval_{name}": value for name, value in scores.items()}
    metrics["teacher_seconds_per_example"] = seconds / len(rows)
    if parameters:
        metrics["teacher_parameters"] = float(parameters)
    with ctx.sessions() as session, session.begin():
        iteration_row(session, ctx.run_id, 0).status = "done"
        upsert_metrics(session, ctx.run_id, 0, metrics)
        mark_done(session, ctx, 0, "teacher_eval", {**metrics, "examples": len(rows)})
    return metrics


def upsert_metrics(session: Session, run_id: uuid.UUID, iteration: int, metrics: dict[str, float]) -> None:
    for name, value in metrics.items():
        session.execute(
            pg_insert(Metric)
            .values(
                id=uuid.uuid4(),
                run_id=run_id,
                iteration=iteration,
                name=name,
                value=value,
                created_at=utcnow(),
            )
            .on_conflict_do_update(index_elements=["run_id", "iteration", "name"], set_={"value": value})
        )
