"""concern acknowledgements: who saw a concern, or handles it in which case

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "concern_acknowledgements",
        sa.Column("concern_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("by", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["concern_id"],
            ["api_concerns.concern_id"],
            name=op.f("fk_concern_acknowledgements_concern_id_api_concerns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("concern_id", name=op.f("pk_concern_acknowledgements")),
    )


def downgrade() -> None:
    op.drop_table("concern_acknowledgements")
