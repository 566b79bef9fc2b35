"""run waiting_for, waiting_since: what a running step waits for while a service it needs is down

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run", sa.Column("waiting_for", sa.Text(), nullable=True))
    op.add_column("run", sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("run", "waiting_since")
    op.drop_column("run", "waiting_for")
