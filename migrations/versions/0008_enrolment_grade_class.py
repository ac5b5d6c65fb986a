"""enrolments carry grade and class; an index to read a school's enrolments for reports

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("enrolments", sa.Column("grade", sa.SmallInteger(), nullable=True))
    op.add_column("enrolments", sa.Column("class_name", sa.Text(), nullable=True))
    op.create_index("ix_enrolments_school", "enrolments", ["school_id"])


def downgrade() -> None:
    op.drop_index("ix_enrolments_school", table_name="enrolments")
    op.drop_column("enrolments", "class_name")
    op.drop_column("enrolments", "grade")
