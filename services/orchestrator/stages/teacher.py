"""The teacher baseline: the teacher answering the real evaluation data few-shot, measured once
per teacher, prompt and data, and stored at iteration 0 beside the students' metrics."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.orchestrator.context import RunContext, StepFailed
from services.orchestrator.stages.done import Done
from services.orchestrator.stages.records import iteration_row
from shared.db.metrics import upsert_metrics
from shared.db.models import Step
from shared.evaluation_data import EvaluationDataError, load_evaluation
from shared.names import (
    TEACHER_PARAMETERS,
    TEACHER_SECONDS_PER_EXAMPLE,
    IterationStatus,
    Stage,
    StepStatus,
    teacher_eval_metric,
)
from shared.schemas.generation import AnswerRequest, ClassifyRequest
from shared.spec import FileSource, HubSource, RunSpec
from shared.task_metrics import task_scores

# Evaluation inputs per generator request: each answers well inside the client timeout on a CPU teacher.
TEACHER_BATCH = 32


def _teacher_answers(ctx: RunContext, inputs: list[dict[str, str]]) -> tuple[list[str], int | None]:
    """The teacher's few-shot answers (labels for classification), and its parameter count."""
    task, teacher = ctx.spec.task, ctx.spec.teacher.served_model
    answers: list[str] = []
    parameters = None
    for start in range(0, len(inputs), TEACHER_BATCH):
        batch = inputs[start : start + TEACHER_BATCH]
        if task.type == "classification":
            labelled = ctx.call(
                ctx.generator.classify, ClassifyRequest(task=task, model=teacher, inputs=batch)
            )
            answers += [p.label for p in labelled.predictions]
            parameters = labelled.parameters
        else:
            request = AnswerRequest(
                task=task, model=teacher, inputs=batch, max_tokens=ctx.spec.teacher.max_tokens
            )
            answered = ctx.call(ctx.generator.answer, request)
            answers += answered.answers
            parameters = answered.parameters
        ctx.show_progress(len(answers), len(inputs), "rows answered")
    return answers, parameters


def teacher_baseline_key(spec: RunSpec) -> str:
    """What the teacher's few-shot answers depend on: the teacher, its prompt (task and seed
    examples) and the evaluation rows. Runs with the same key share one measurement."""
    assert spec.evaluation is not None
    source = spec.evaluation.source
    data = Path(source.path) if isinstance(source, FileSource) else None
    stamp = data.stat() if data is not None and data.is_file() else None
    fields = {"path", "input_map", "label_field", "limit"}
    if isinstance(source, HubSource):  # only then: the keys of file runs measured earlier stay the same
        fields |= {"dataset", "config", "split"}
    parts = {
        "teacher": spec.teacher.model,
        "max_tokens": spec.teacher.max_tokens if spec.task.type == "seq2seq" else None,
        "task": spec.task.model_dump(mode="json"),
        "evaluation": spec.evaluation.model_dump(mode="json", include=fields),
        "data": [stamp.st_size, stamp.st_mtime_ns] if stamp else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def teacher_eval(ctx: RunContext, iteration: int) -> Done:
    """The teacher answering the evaluation data few-shot from the seed examples, scored with the
    students' metrics (teacher_eval_accuracy, teacher_eval_f1, ...). Measured once per
    teacher_baseline_key: later runs (other modes, repeats) reuse the stored measurement."""
    spec = ctx.spec
    assert spec.evaluation is not None
    key = teacher_baseline_key(spec)
    with ctx.sessions() as session:
        earlier = session.scalar(
            select(Step)
            .where(
                Step.stage == Stage.TEACHER_EVAL,
                Step.status == StepStatus.DONE,
                Step.result["cache_key"].as_string() == key,
            )
            .order_by(Step.finished_at)
            .limit(1)
        )
    result: dict[str, Any]
    if earlier is not None:
        metrics = {k: float(v) for k, v in earlier.result.get("metrics", {}).items()}
        result = {"metrics": metrics, "cache_key": key, "reused_from": str(earlier.run_id)}
    else:
        try:
            rows = load_evaluation(spec.evaluation, spec.task).examples
        except EvaluationDataError as exc:
            raise StepFailed(str(exc)) from exc
        if not rows:
            raise StepFailed(f"{spec.evaluation.source}: no usable rows")
        started = time.monotonic()
        answers, parameters = _teacher_answers(ctx, [r.fields for r in rows])
        seconds = time.monotonic() - started
        scores = task_scores(spec.task.type, answers, [r.references for r in rows], spec.task.labels or [])
        metrics = {teacher_eval_metric(name): value for name, value in scores.items()}
        metrics[TEACHER_SECONDS_PER_EXAMPLE] = seconds / len(rows)
        if parameters:
            metrics[TEACHER_PARAMETERS] = float(parameters)
        result = {"metrics": metrics, "cache_key": key, "examples": len(rows)}

    def write(session: Session) -> None:
        iteration_row(session, ctx.run_id, 0).status = IterationStatus.DONE
        upsert_metrics(session, ctx.run_id, 0, metrics)

    return Done(result, write)
