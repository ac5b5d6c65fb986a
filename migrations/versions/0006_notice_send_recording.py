"""notices record a send in flight and the process that holds them

Revision ID: 0006
Revises: 0004

`send_started_at` is written (and committed) just before a notice is handed to the mailbox or
webhook and cleared with the answer: a notice found with it set was in flight when its process
died, so the next send is a resend and recorded as one. `claimed_by` names the process instance
holding the lease, so a restarted alerter can take back its dead predecessor's claims at once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "notices", sa.Column("send_started_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("notices", sa.Column("claimed_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("notices", "claimed_by")
    op.drop_column("notices", "send_started_at")
