"""Metric rows, as every writer stores them: the trainer (a student's metrics) and the orchestrator's
stages (the loop's diagnostics, the teacher's baseline)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import Metric


def upsert_metrics(session: Session, run_id: uuid.UUID, iteration: int, metrics: Mapping[str, float]) -> None:
    """One Metric row per name at (run, iteration), replacing the value a re-run step stored before;
    the caller commits. Rows in name order: two writers of the same rows lock them in one order."""
    if not metrics:
        return
    rows = [
        {"id": uuid.uuid4(), "run_id": run_id, "iteration": iteration, "name": name, "value": float(value)}
        for name, value in sorted(metrics.items())
    ]
    stmt = insert(Metric).values(rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["run_id", "iteration", "name"], set_={"value": stmt.excluded.value}
        )
    )
