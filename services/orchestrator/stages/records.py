"""The rows every stage reads and writes: samples, the iteration row and the step's own mark
(metrics: shared.db.metrics), and the per-stage seeds that make a re-run of a step draw the same."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import Iteration, Sample, Step
from shared.names import IterationStatus, StepStatus
from shared.schemas.generation import SamplingSettings
from shared.spec import RunSpec


def mark_step(
    session: Session,
    run_id: uuid.UUID,
    iteration: int,
    stage: str,
    result: dict[str, Any],
    status: StepStatus = StepStatus.DONE,
) -> None:
    stmt = pg_insert(Step).values(
        run_id=run_id,
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


def stage_seed(spec: RunSpec, iteration: int, stage: str) -> int:
    digest = hashlib.sha256(f"{spec.teacher.seed}/{iteration}/{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def sampling(spec: RunSpec, iteration: int, stage: str) -> SamplingSettings:
    teacher = spec.teacher
    return SamplingSettings(
        temperature=teacher.temperature,
        top_p=teacher.top_p,
        top_k=teacher.top_k,
        max_tokens=teacher.max_tokens,
        seed=stage_seed(spec, iteration, stage),
    )


def samples(session: Session, run_id: uuid.UUID, **filters: Any) -> list[Sample]:
    query = select(Sample).where(Sample.run_id == run_id).order_by(Sample.iteration, Sample.position)
    for name, value in filters.items():
        query = query.where(getattr(Sample, name) == value)
    return list(session.scalars(query))


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
                status=IterationStatus.RUNNING,
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
