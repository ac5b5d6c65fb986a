"""the day-change tick's marks per (school, partition): workers split the tick by partition

Revision ID: 0015
Revises: 0014

Existing marks get partition -1, which no worker owns: every school is re-evaluated once after
the upgrade (as after a lost marks table; evaluation is idempotent), then marked per partition.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "worker_school_horizons",
        sa.Column("partition", sa.Integer(), server_default="-1", nullable=False),
    )
    op.alter_column("worker_school_horizons", "partition", server_default=None)
    op.drop_constraint("pk_worker_school_horizons", "worker_school_horizons", type_="primary")
    op.create_primary_key(
        "pk_worker_school_horizons", "worker_school_horizons", ["school_id", "partition"]
    )


def downgrade() -> None:
    op.execute("delete from worker_school_horizons where partition <> -1")
    op.drop_constraint("pk_worker_school_horizons", "worker_school_horizons", type_="primary")
    op.drop_column("worker_school_horizons", "partition")
    op.create_primary_key("pk_worker_school_horizons", "worker_school_horizons", ["school_id"])
