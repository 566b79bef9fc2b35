"""sentence embedding of each sample's input text

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sample", sa.Column("embedding", postgresql.ARRAY(sa.REAL()), nullable=True))


def downgrade() -> None:
    op.drop_column("sample", "embedding")
