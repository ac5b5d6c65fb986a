"""cases, their entries and their free text (kept apart); the case model of municipalities
and schools

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_models",
        sa.Column("municipality_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["municipality_id"],
            ["municipalities.id"],
            name=op.f("fk_case_models_municipality_id_municipalities"),
        ),
        sa.PrimaryKeyConstraint("municipality_id", "id", name=op.f("pk_case_models")),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("pupil_id", sa.Text(), nullable=False),
        sa.Column("school_id", sa.Text(), nullable=False),
        sa.Column("municipality_id", sa.Text(), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("coordinator", sa.Text(), nullable=True),
        sa.Column("leader", sa.Text(), nullable=True),
        sa.Column("opened_on", sa.Date(), nullable=False),
        sa.Column("opened_by", sa.Text(), nullable=False),
        sa.Column("planned_end", sa.Date(), nullable=True),
        sa.Column("next_evaluation_due", sa.Date(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("closed_on", sa.Date(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "overdue_reasons", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "reminded", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["schools.id"], name=op.f("fk_cases_school_id_schools")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
    )
    op.create_index("ix_cases_pupil", "cases", ["pupil_id"], unique=False)
    op.create_index("ix_cases_school", "cases", ["school_id", "opened_on", "id"], unique=False)
    op.create_index(
        "uq_cases_open",
        "cases",
        ["pupil_id", "school_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "case_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("concern_id", sa.Uuid(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_entries_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_entries")),
    )
    op.create_index("ix_case_entries_case", "case_entries", ["case_id", "id"], unique=False)
    op.create_index(
        "uq_case_entries_concern",
        "case_entries",
        ["case_id", "concern_id"],
        unique=True,
        postgresql_where=sa.text("concern_id is not null"),
    )
    op.create_table(
        "case_texts",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["case_entries.id"],
            name=op.f("fk_case_texts_entry_id_case_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_case_texts")),
    )
    op.add_column("municipalities", sa.Column("case_model", sa.Text(), nullable=True))
    op.add_column(
        "municipalities",
        sa.Column("case_opening_levels", postgresql.ARRAY(sa.Text()), nullable=True),
    )
    op.add_column("schools", sa.Column("case_model", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_table("case_models")
    op.drop_column("schools", "case_model")
    op.drop_column("municipalities", "case_opening_levels")
    op.drop_column("municipalities", "case_model")
    op.drop_table("case_texts")
    op.drop_index(
        "uq_case_entries_concern",
        table_name="case_entries",
        postgresql_where=sa.text("concern_id is not null"),
    )
    op.drop_index("ix_case_entries_case", table_name="case_entries")
    op.drop_table("case_entries")
    op.drop_index("uq_cases_open", table_name="cases", postgresql_where=sa.text("status = 'open'"))
    op.drop_index("ix_cases_school", table_name="cases")
    op.drop_index("ix_cases_pupil", table_name="cases")
    op.drop_table("cases")
