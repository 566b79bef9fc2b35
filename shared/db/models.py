"""The GOLD schema. Postgres is the source of truth for runs; Redis only carries work."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    REAL,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import UUIDPK, Base, Timestamped, utcnow
from shared.names import IterationStatus, RunStatus, StepStatus

JSONType = JSON().with_variant(JSONB(), "postgresql")


class Run(UUIDPK, Timestamped, Base):
    __tablename__ = "run"
    # An Idempotency-Key is unique per owner, so two tenants never get each other's run; runs without
    # an owner (authentication disabled, or created before tenants) share one namespace. Two partial
    # indexes rather than NULLS NOT DISTINCT, which would also make (NULL, NULL) rows collide.
    __table_args__ = (
        Index(
            "uq_run_owner_idempotency_key",
            "owner",
            "idempotency_key",
            unique=True,
            postgresql_where=text("owner IS NOT NULL"),
        ),
        Index(
            "uq_run_idempotency_key", "idempotency_key", unique=True, postgresql_where=text("owner IS NULL")
        ),
    )

    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED, index=True)  # RunStatus
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # Name of the API key that created the run (shared.auth.Principal); NULL: visible to admins only.
    owner: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    # Lease held by the orchestrator process driving the run (restart-safe hand-over).
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the running step waits for, while a service it needs is down (the last error, e.g.
    # "generator: ... answered 503: the engine is reloading ..."), and since when; NULL otherwise.
    waiting_for: Mapped[str | None] = mapped_column(Text)
    waiting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # How far the running step has got, in words (e.g. "64 of 500 rows answered"), written every few
    # seconds by the step; NULL between steps and for steps that do not report.
    stage_progress: Mapped[str | None] = mapped_column(Text)
    # MLflow tracking (GOLD_MLFLOW_TRACKING_URI; services/orchestrator/tracking): the MLflow run this
    # run is logged to, and while the tracking server is behind (down, failing), since when and why.
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    tracking_lag: Mapped[str | None] = mapped_column(Text)


class Iteration(UUIDPK, Timestamped, Base):
    __tablename__ = "iteration"
    __table_args__ = (UniqueConstraint("run_id", "index"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    # 1..N for loop iterations; N+1 is the final student trained on the whole pool.
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=IterationStatus.RUNNING)  # IterationStatus
    # Generation statistics per kind: {"train": {"requested", "accepted", "rejected": {reason: n}}}
    parse_stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Wall seconds per stage: {"generate_train": 12.3, "train": 40.1, ...}
    timings: Mapped[dict[str, float]] = mapped_column(JSONType, default=dict)
    checkpoint_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("checkpoint.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Sample(UUIDPK, Timestamped, Base):
    __tablename__ = "sample"
    __table_args__ = (
        UniqueConstraint("run_id", "iteration", "kind", "position"),
        Index("ix_sample_run_iteration_kind", "run_id", "iteration", "kind"),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)  # 0 for seed examples, 1..N generated
    kind: Mapped[str] = mapped_column(String(8))  # seed | train | ood
    position: Mapped[int] = mapped_column(Integer)  # order within (run, iteration, kind)
    fields: Mapped[dict[str, str]] = mapped_column(JSONType)  # input fields + output field
    label: Mapped[str | None] = mapped_column(String(200))
    text_hash: Mapped[str | None] = mapped_column(String(64))  # the generator's duplicate key
    # In-context examples of the prompt that produced it: {"seeds": [i...], "feedback": [sample ids]}
    prompt_examples: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    # Teacher verification: the label the generator was asked for, the teacher's distribution over
    # the labels, and whether the sample is left out of training (kept in the table either way).
    requested_label: Mapped[str | None] = mapped_column(String(200))
    teacher_probs: Mapped[dict[str, float] | None] = mapped_column(JSONType)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    energy: Mapped[float | None] = mapped_column(Float)
    selected: Mapped[bool] = mapped_column(Boolean, default=False)
    # Unit-length sentence embedding of the input fields (the scorer's /v1/embed): near-duplicate
    # filtering against the pool, OOD distance and diversity metrics.
    embedding: Mapped[list[float] | None] = mapped_column(ARRAY(REAL))


class Rejection(UUIDPK, Timestamped, Base):
    """A generated completion that did not become a sample, kept with the reason."""

    __tablename__ = "rejection"
    __table_args__ = (Index("ix_rejection_run_iteration", "run_id", "iteration"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)


class Checkpoint(UUIDPK, Timestamped, Base):
    __tablename__ = "checkpoint"
    __table_args__ = (UniqueConstraint("run_id", "iteration", "role"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # loop | final | reference
    path: Mapped[str] = mapped_column(Text)  # relative to the artifact directory
    student_model: Mapped[str] = mapped_column(String(200))
    student_kind: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class Metric(UUIDPK, Timestamped, Base):
    __tablename__ = "metric"
    __table_args__ = (UniqueConstraint("run_id", "iteration", "name"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class Step(Base):
    """One keyed, idempotent step of a run: (run, iteration, stage). Completed steps are skipped."""

    __tablename__ = "step"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    iteration: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=StepStatus.RUNNING)  # StepStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RunTracking(Base):
    """The MLflow outbox of one run (services/orchestrator/tracking). The driver bumps `due` in each
    step's commit; the tracker sends what changed and sets `synced` to the `due` it read, so a
    tracking server that is down only delays the sending. `logged` keys what MLflow already holds
    (a metric by name and step), so a resumed run or a retried send never logs a point twice."""

    __tablename__ = "run_tracking"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    due: Mapped[int] = mapped_column(Integer, default=1)
    synced: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed sends in a row
    next_try_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lagging_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Held by the orchestrator sending it, so two never send the same run at once.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    logged: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
