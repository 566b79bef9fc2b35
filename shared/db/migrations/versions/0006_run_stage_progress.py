"""run stage_progress: how far the running step has got (e.g. "64 of 500 rows answered")

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run", sa.Column("stage_progress", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("run", "stage_progress")
