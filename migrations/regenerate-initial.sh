#!/usr/bin/env bash
# Regenerates migrations/versions/0001_initial_schema.py from the models (nothing is deployed yet).
set -euo pipefail
cd "$(dirname "$0")/.."
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists opspor_scratch with (force)" -c "create database opspor_scratch" >/dev/null
rm -f migrations/versions/0001_initial_schema.py
.venv/bin/python -c "
from opspor_shared.migrate import alembic_config
from alembic import command
command.revision(alembic_config('postgresql+asyncpg://postgres@127.0.0.1:5432/opspor_scratch'), message='initial schema', autogenerate=True, rev_id='0001')
" >/dev/null
.venv/bin/ruff format -q migrations/versions/0001_initial_schema.py
.venv/bin/ruff check -q --fix migrations/versions/0001_initial_schema.py || true
echo regenerated
