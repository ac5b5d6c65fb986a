"""audit_log and the purge logs are append-only

Revision ID: 0002
Revises: 0001

Hand-written: autogenerate cannot express triggers. The trigger function is generic, so any
other append-only table can reuse it with the same two triggers. Triggers fire for superusers
too; only `session_replication_role = replica` (a superuser setting, used by the test suite to
empty tables between tests) skips them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Who looked at a pupil's data, and what each service's purge deleted: records that must not
# be edited afterwards, by the application or anyone holding its credentials.
APPEND_ONLY = ("audit_log", "api_purges", "worker_purges", "alerter_purges")


def upgrade() -> None:
    op.execute(
        """
        create function opspor_forbid_change() returns trigger language plpgsql as $$
        begin
            raise exception '% is append-only: % refused', tg_table_name, tg_op
                using errcode = 'insufficient_privilege';
        end
        $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"create trigger {table}_append_only before update or delete on {table} "
            "for each row execute function opspor_forbid_change()"
        )
        op.execute(
            f"create trigger {table}_no_truncate before truncate on {table} "
            "for each statement execute function opspor_forbid_change()"
        )


def downgrade() -> None:
    for table in APPEND_ONLY:
        op.execute(f"drop trigger {table}_no_truncate on {table}")
        op.execute(f"drop trigger {table}_append_only on {table}")
    op.execute("drop function opspor_forbid_change()")
