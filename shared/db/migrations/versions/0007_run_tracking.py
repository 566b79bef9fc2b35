"""MLflow tracking: the run's MLflow run id and lag note, and the tracking outbox (run_tracking)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run", sa.Column("mlflow_run_id", sa.String(length=64), nullable=True))
    op.add_column("run", sa.Column("tracking_lag", sa.Text(), nullable=True))
    op.create_table(
        "run_tracking",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("due", sa.Integer(), nullable=False),
        sa.Column("synced", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lagging_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("logged", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name=op.f("fk_run_tracking_run_id_run"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_tracking")),
    )


def downgrade() -> None:
    op.drop_table("run_tracking")
    op.drop_column("run", "tracking_lag")
    op.drop_column("run", "mlflow_run_id")
