"""routing per municipality and school, and the log of its changes

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "municipalities",
        sa.Column("routing", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column(
        "schools", sa.Column("routing", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.create_table(
        "routing_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("municipality_id", sa.Text(), nullable=False),
        sa.Column("school_id", sa.Text(), nullable=True),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("by", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_changes")),
    )


def downgrade() -> None:
    op.drop_table("routing_changes")
    op.drop_column("schools", "routing")
    op.drop_column("municipalities", "routing")
