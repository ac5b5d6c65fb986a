"""opspor-import: load a municipality's registrations, enrolments and school years.

    opspor-import --api-url https://opspor.example --token-file token.txt \\
        registrations last-year.csv

See docs/import.md for the file formats. Exit status: 0 everything stored (or already there),
1 some rows refused (listed with line and field; nothing of their batch was stored), 2 the api
was unreachable or refused the token (run again to resume), 130 interrupted (run again to
resume).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TextIO, cast

import httpx

from opspor_api.importer.run import KINDS, MAX_BATCH, ImportAborted, Kind, Stats, run_import

SHOWN_PROBLEMS = 50


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opspor-import", description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=KINDS)
    p.add_argument("file", type=Path, help="CSV (with a header row) or JSON Lines (.jsonl)")
    p.add_argument("--api-url", default=os.environ.get("OPSPOR_API_URL", "http://127.0.0.1:8000"))
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token (default: the OPSPOR_TOKEN environment variable); "
        "registrations and enrolments need a school_system token naming the schools, school "
        "years a municipality_admin token",
    )
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: from the file name")
    p.add_argument("--checkpoint", type=Path, help="default: <file>.<kind>.checkpoint")
    p.add_argument("--batch-size", type=int, default=MAX_BATCH, help="registrations per request")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    return p


def summary(stats: Stats, elapsed: float, out: TextIO) -> None:
    rate = stats.rows / elapsed if elapsed > 0 else 0.0
    out.write(
        f"done in {elapsed:,.1f} s: {stats.rows:,} rows handled ({rate:,.0f} rows/s)"
        + (f", {stats.skipped:,} done by an earlier run" if stats.skipped else "")
        + f"; stored {stats.stored:,}, already there {stats.duplicates:,}, "
        f"refused {stats.refused_rows:,} rows ({len(stats.problems):,} problems)\n"
    )
    for problem in stats.problems[:SHOWN_PROBLEMS]:
        out.write(f"  {problem}\n")
    if len(stats.problems) > SHOWN_PROBLEMS:
        out.write(f"  ... and {len(stats.problems) - SHOWN_PROBLEMS:,} more (listed above)\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    else:
        token = os.environ.get("OPSPOR_TOKEN", "").strip()
    if not token:
        sys.stderr.write("opspor-import: give a token with --token-file or OPSPOR_TOKEN\n")
        return 2
    if not args.file.is_file():
        sys.stderr.write(f"opspor-import: no file {args.file}\n")
        return 2

    async def go() -> Stats:
        async with httpx.AsyncClient(
            base_url=args.api_url,
            headers={"Authorization": f"Bearer {token}", "X-Purpose": "registration"},
            timeout=args.timeout,
        ) as client:
            return await run_import(
                client,
                cast(Kind, args.kind),
                args.file,
                checkpoint_path=args.checkpoint,
                fmt=args.format,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                out=sys.stderr,
            )

    started = time.monotonic()
    try:
        stats = asyncio.run(go())
    except ImportAborted as exc:
        sys.stderr.write(f"\nopspor-import: stopped: {exc}; run the same command to resume\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nopspor-import: interrupted; run the same command to resume\n")
        return 130
    summary(stats, time.monotonic() - started, sys.stdout)
    return 1 if stats.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
