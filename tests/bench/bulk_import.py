"""`make bench`, bulk import section: opspor-import loading a municipality's year.

    .venv/bin/python -m tests.bench.bulk_import [--rows 1000000] [--concurrency 2]

Writes a JSON Lines file of `--rows` registrations (4 per pupil, a week of school days apart,
so the measurement is storing and evaluating, not mail), starts the stack, loads the file with
the importer through the api (rate limit lifted: one client), and waits until the worker holds
every registration and both outboxes are empty: by then every touched pupil was evaluated
(the worker evaluates a pupil in the transaction that stores its registrations).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from opspor_api.importer.run import run_import
from opspor_shared.auth import Role
from opspor_shared.devstack.stack import Stack
from tests.bench.progress import Progress
from tests.bench.system import describe_machine
from tests.bench.workload import MAX_DAYS_PER_PUPIL, configure, evaluated_school_days
from tests.bench.workload import registration as bench_registration

ROOT = Path(__file__).resolve().parents[2]
SCHOOL = "bench-import"


def write_file(path: Path, rows: int) -> None:
    days = evaluated_school_days()
    stride = 7
    span = len(days) - stride * (MAX_DAYS_PER_PUPIL - 1)
    with path.open("w") as f:
        for i in range(rows):
            pupil, k = divmod(i, MAX_DAYS_PER_PUPIL)
            day = days[pupil % span + stride * k]
            item = bench_registration(
                f"imp-{pupil:07d}-{k}", f"elev-imp-{pupil:07d}", SCHOOL, day, "illness"
            )
            f.write(json.dumps(item, separators=(",", ":")) + "\n")


async def measure(stack: Stack, source: Path, args: argparse.Namespace) -> dict[str, Any]:
    admin = stack.headers(Role.MUNICIPALITY_ADMIN, municipality="bench-aalborg")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=admin, timeout=60) as client:
        await configure(client, SCHOOL)
    writer = stack.headers(
        Role.SCHOOL_SYSTEM, municipality="bench-aalborg", schools=(SCHOOL,), ttl_seconds=86400
    )
    async with (
        Progress(stack.database_url) as progress,
        httpx.AsyncClient(base_url=stack.api_url, headers=writer, timeout=300) as client,
    ):
        began = time.monotonic()
        stats = await run_import(
            client,
            "registrations",
            source,
            checkpoint_path=args.var_dir / "import.checkpoint",
            concurrency=args.concurrency,
            out=sys.stderr,
        )
        imported = time.monotonic()
        caught_up, seen, state = await progress.wait_caught_up(
            SCHOOL, stats.stored + stats.duplicates, args.catch_up_timeout
        )
    return {
        "rows": stats.rows,
        "stored": stats.stored,
        "duplicates": stats.duplicates,
        "refused_rows": stats.refused_rows,
        "import_seconds": round(imported - began, 1),
        "import_rows_per_second": round(stats.rows / (imported - began)),
        "worker_caught_up": caught_up,
        "seconds_until_worker_evaluated_everything": round(seen - began, 1),
        "worker_behind_import_end_seconds": round(seen - imported, 1),
        "worker_registrations_at_end": state.worker_registrations,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--concurrency", type=int, default=2, help="importer requests in flight")
    p.add_argument("--catch-up-timeout", type=float, default=3600.0)
    p.add_argument("--var-dir", type=Path, default=ROOT / "var" / "bench-import")
    p.add_argument("--database", default="opspor_bench_import")
    args = p.parse_args(argv)
    args.var_dir.mkdir(parents=True, exist_ok=True)
    source = args.var_dir / f"registrations-{args.rows}.jsonl"
    (args.var_dir / "import.checkpoint").unlink(missing_ok=True)
    began = time.monotonic()
    write_file(source, args.rows)
    print(f"wrote {source} in {time.monotonic() - began:.1f} s", file=sys.stderr)
    with Stack(
        var_dir=args.var_dir,
        database_name=args.database,
        recreate_database=True,
        extra_env={
            "RATE_LIMIT_PER_SECOND": "1000000",
            "RATE_LIMIT_BURST": "1000000",
            "NOTICE_SETTLE_SECONDS": "0",
        },
    ) as stack:
        result = asyncio.run(measure(stack, source, args))
    result["machine"] = describe_machine()
    out = args.var_dir / "results.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"bulk import: {result['rows']:,} rows in {result['import_seconds']} s "
        f"({result['import_rows_per_second']:,} rows/s); worker evaluated everything after "
        f"{result['seconds_until_worker_evaluated_everything']} s "
        f"({result['worker_behind_import_end_seconds']} s after the import ended)\nJSON: {out}"
    )
    return 0 if result["worker_caught_up"] and not result["refused_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
