"""audit_log is append-only

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
    op.execute(
        "create trigger audit_log_append_only before update or delete on audit_log "
        "for each row execute function opspor_forbid_change()"
    )
    op.execute(
        "create trigger audit_log_no_truncate before truncate on audit_log "
        "for each statement execute function opspor_forbid_change()"
    )


def downgrade() -> None:
    op.execute("drop trigger audit_log_no_truncate on audit_log")
    op.execute("drop trigger audit_log_append_only on audit_log")
    op.execute("drop function opspor_forbid_change()")
