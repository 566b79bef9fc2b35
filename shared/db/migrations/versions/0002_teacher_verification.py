"""teacher verification columns on sample

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sample", sa.Column("requested_label", sa.String(length=200), nullable=True))
    op.add_column(
        "sample",
        sa.Column(
            "teacher_probs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )
    op.add_column("sample", sa.Column("excluded", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column("sample", "excluded")
    op.drop_column("sample", "teacher_probs")
    op.drop_column("sample", "requested_label")
