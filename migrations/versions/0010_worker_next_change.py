"""worker_pupils.next_change_on and worker_school_horizons.basis: the day-change tick evaluates
only the pupils whose concerns can change on the new days

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL in both means "not known": the next tick evaluates every pupil once, as before.
    op.add_column("worker_pupils", sa.Column("next_change_on", sa.Date(), nullable=True))
    op.add_column("worker_school_horizons", sa.Column("basis", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("worker_school_horizons", "basis")
    op.drop_column("worker_pupils", "next_change_on")
