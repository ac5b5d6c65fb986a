"""case reminders and grouped notices in the notification log

Revision ID: 0004
Revises: 0002

A reminder of an overdue case is a notice of kind `reminder`; these columns name its case,
reason and day, and the unique constraint keeps one per (case, reason, day, recipient).
Mail notices of the concerns of one evaluation share a group key: one mail per recipient.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("notices", sa.Column("case_id", sa.Uuid(), nullable=True))
    op.add_column("notices", sa.Column("reason", sa.Text(), nullable=True))
    op.add_column("notices", sa.Column("reminder_day", sa.Date(), nullable=True))
    op.add_column("notices", sa.Column("group_key", sa.Text(), nullable=True))
    op.create_index("ix_notices_group", "notices", ["group_key"], unique=False)
    op.create_unique_constraint(
        "uq_notices_reminder", "notices", ["case_id", "reason", "reminder_day", "recipient"]
    )


def downgrade() -> None:
    op.drop_constraint("uq_notices_reminder", "notices", type_="unique")
    op.drop_index("ix_notices_group", table_name="notices")
    op.drop_column("notices", "group_key")
    op.drop_column("notices", "reminder_day")
    op.drop_column("notices", "reason")
    op.drop_column("notices", "case_id")
