"""The tracking outbox in Postgres (shared.db.models.RunTracking): the driver marks a run due in
the transaction that commits a step, the tracker claims a due run, sends it and records what it
sent. Nothing here talks to MLflow, so the driver never waits for it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import RunTracking


def mark_due(session: Session, run_id: uuid.UUID) -> None:
    """The run has something new to send (a step committed, it started or ended); the caller
    commits. One counter bump, never a lock held by the tracker while it talks to MLflow."""
    stmt = insert(RunTracking).values(run_id=run_id, due=1, synced=0, attempts=0, logged={})
    session.execute(stmt.on_conflict_do_update(index_elements=["run_id"], set_={"due": RunTracking.due + 1}))


def due_runs(session: Session, limit: int = 20) -> list[uuid.UUID]:
    """Runs with something unsent whose retry time has come and that no tracker holds, oldest
    failure last (a server that is down does not starve runs that would go through)."""
    now = utcnow()
    return list(
        session.scalars(
            select(RunTracking.run_id)
            .where(
                RunTracking.due > RunTracking.synced,
                or_(RunTracking.next_try_at.is_(None), RunTracking.next_try_at <= now),
                or_(RunTracking.lease_until.is_(None), RunTracking.lease_until < now),
            )
            .order_by(RunTracking.attempts, RunTracking.run_id)
            .limit(limit)
        )
    )


def claim(session: Session, run_id: uuid.UUID, lease_s: float) -> RunTracking | None:
    """The run's outbox row, leased to the caller, or None when another tracker holds it."""
    now = utcnow()
    claimed = session.execute(
        update(RunTracking)
        .where(
            RunTracking.run_id == run_id,
            or_(RunTracking.lease_until.is_(None), RunTracking.lease_until < now),
        )
        .values(lease_until=now + timedelta(seconds=lease_s))
        .returning(RunTracking.run_id)
    ).scalar()
    if claimed is None:
        return None
    return session.get(RunTracking, run_id, populate_existing=True)


def next_try(attempts: int, retry_max_s: float, now: datetime) -> datetime:
    """Back off 1, 2, 4 ... seconds up to retry_max_s after `attempts` failed sends in a row."""
    return now + timedelta(seconds=min(2.0 ** (attempts - 1), retry_max_s))
