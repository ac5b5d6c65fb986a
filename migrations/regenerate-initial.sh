#!/usr/bin/env bash
# Regenerates migrations/versions/0001_initial_schema.py from the models (nothing is deployed yet).
set -euo pipefail
cd "$(dirname "$0")/.."
# A name per checkout, so several worktrees can regenerate at the same time.
scratch="opspor_scratch_$(pwd | sha1sum | cut -c1-8)"
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $scratch with (force)" -c "create database $scratch" >/dev/null
rm -f migrations/versions/0001_initial_schema.py
# Hand-written revisions (0002 on) build on 0001: aside while 0001 is regenerated from an empty
# database, back afterwards.
aside="$(mktemp -d)"
trap 'mv "$aside"/*.py migrations/versions/ 2>/dev/null || true; rmdir "$aside"' EXIT
find migrations/versions -maxdepth 1 -name '*.py' ! -name '0001_*' -exec mv {} "$aside"/ \;
.venv/bin/python -c "
from opspor_shared.migrate import alembic_config
from alembic import command
command.revision(alembic_config('postgresql+asyncpg://postgres@127.0.0.1:5432/$scratch'), message='initial schema', autogenerate=True, rev_id='0001')
" >/dev/null
# No creation date: it would make every regeneration a merge conflict.
sed -i "/^Create Date:/d" migrations/versions/0001_initial_schema.py
.venv/bin/ruff format -q migrations/versions/0001_initial_schema.py
.venv/bin/ruff check -q --fix migrations/versions/0001_initial_schema.py || true
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $scratch with (force)" >/dev/null
echo regenerated
