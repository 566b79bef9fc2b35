"""run owner: the API key (tenant) that created a run; Idempotency-Key unique per owner

Runs that exist before this migration keep owner NULL: only admin keys (GOLD_ADMIN_KEYS) and a stack
without API keys see them. An Idempotency-Key is unique per owner; owner-less runs share one namespace.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run", sa.Column("owner", sa.String(length=200), nullable=True))
    op.drop_constraint("uq_run_idempotency_key", "run", type_="unique")
    op.create_index(
        "uq_run_owner_idempotency_key",
        "run",
        ["owner", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("owner IS NOT NULL"),
    )
    op.create_index(
        "uq_run_idempotency_key",
        "run",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("owner IS NULL"),
    )


def downgrade() -> None:
    # Fails while two owners hold the same Idempotency-Key: that cannot be stored without owners.
    op.drop_index("uq_run_idempotency_key", table_name="run")
    op.drop_index("uq_run_owner_idempotency_key", table_name="run")
    op.drop_column("run", "owner")
    op.create_unique_constraint("uq_run_idempotency_key", "run", ["idempotency_key"])
