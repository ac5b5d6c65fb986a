"""opspor-replay: publish events again from the database, which is the record.

    DATABASE_URL=postgresql+asyncpg://... opspor-replay registrations [--since T] [--school ID]...
    DATABASE_URL=postgresql+asyncpg://... opspor-replay concerns [--since T] [--school ID]...
    DATABASE_URL=postgresql+asyncpg://... opspor-replay cases [--since T] [--school ID]...
    (or: python -m opspor_shared.replay ...)

`registrations` reads the api's database (registration_events) and queues the events in the
api's outbox for absence.registrations.v1; `concerns` reads the threshold-worker's database
(concerns, current revision each) and queues them in the worker's outbox for
absence.concerns.v1; `cases` reads the api's database (cases, current state each) and queues
them in the api's outbox for absence.cases.v1. The running services' relays publish them.
Consumers are idempotent, so a replay changes nothing already right and restores what the
broker lost. Topic names follow REGISTRATIONS_TOPIC / CONCERNS_TOPIC / CASES_TOPIC like the
services.

The one command lives here, next to the other shared operations code; the two replays import
their service's tables lazily, so each runs with only that service's database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import datetime

from opspor_shared.db import make_engine, make_sessionmaker
from opspor_shared.logging import configure_logging


def _since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2026-11-24T18:00:00+00:00")
    return parsed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opspor-replay", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["registrations", "concerns", "cases"])
    p.add_argument("--since", type=_since, help="only events received/changed at or after")
    p.add_argument("--school", action="append", default=[], help="only this school (repeat)")
    return p


async def replay(what: str, database_url: str, since: datetime | None, schools: list[str]) -> int:
    engine = make_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    sessionmaker = make_sessionmaker(engine)
    try:
        if what == "registrations":
            from opspor_api.replay import replay_registrations

            topic = os.environ.get("REGISTRATIONS_TOPIC", "absence.registrations.v1")
            return await replay_registrations(sessionmaker, topic, since=since, schools=schools)
        if what == "cases":
            from opspor_api.replay import replay_cases

            topic = os.environ.get("CASES_TOPIC", "absence.cases.v1")
            return await replay_cases(sessionmaker, topic, since=since, schools=schools)
        from opspor_worker.replay import replay_concerns

        topic = os.environ.get("CONCERNS_TOPIC", "absence.concerns.v1")
        return await replay_concerns(sessionmaker, topic, since=since, schools=schools)
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    configure_logging("replay")
    args = parser().parse_args(argv)
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("opspor-replay: set DATABASE_URL to the database of the service to replay")
    queued = asyncio.run(replay(args.what, url, args.since, args.school))
    print(f"queued {queued} {args.what} events; the service's relay publishes them")


if __name__ == "__main__":
    main()
