"""The fault suite's harness: the whole system as real processes (Stack) behind a database
proxy that can be cut, a supervisor that restarts a service that died (as systemd or an
orchestrator would), a client that retries with the same event ids, and the figures each
scenario is judged by."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import asyncpg
import httpx

from opspor_shared.devstack.stack import Stack
from tests.auth import RouteAuth
from tests.support import registration, school_days

MONDAY = date(2026, 9, 21)
LONG = os.environ.get("OPSPOR_FAULTS_LONG") == "1"


class Supervisor:
    """Restarts any service whose process has exited; the restart runs without OPSPOR_FAULT,
    so an injected fault fires once. Counts the crashes per service."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.crashes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.paused: set[str] = set()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for name, service in self.stack.services.items():
                process = service.process
                if name in self.paused or process is None or process.poll() is None:
                    continue
                self.crashes[name] = self.crashes.get(name, 0) + 1
                service.env.pop("OPSPOR_FAULT", None)
                service.start()

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def inject(stack: Stack, supervisor: Supervisor, service: str, point: str) -> None:
    """Restart `service` so it dies (os._exit) the first time it reaches `point`."""
    supervisor.paused.add(service)
    try:
        running = stack.services[service]
        running.stop()
        running.env["OPSPOR_FAULT"] = point
        running.start()
        running.wait_ready()
    finally:
        supervisor.paused.discard(service)


@dataclass
class Workload:
    """Pupils with five consecutive unauthorised days (one concern and one mail each) and
    pupils with two (none)."""

    prefix: str
    concerned: int
    quiet: int
    accepted: set[str] = field(default_factory=set)

    def pupils(self) -> Iterator[tuple[str, int]]:
        for i in range(self.concerned):
            yield f"{self.prefix}-c{i}", 5
        for i in range(self.quiet):
            yield f"{self.prefix}-q{i}", 2

    def items(self) -> list[dict[str, Any]]:
        return [
            registration(pupil, day)
            for pupil, days in self.pupils()
            for day in school_days(MONDAY, days)
        ]

    def post(self, stack: Stack, *, batch: int = 10) -> int:
        """Posts every item, retrying each batch with the same event ids until it is answered
        200 (through crashes, 503s and refused connections). Returns how many 503s it saw."""
        items = self.items()
        unavailable = 0
        auth = RouteAuth(issuer=stack.issuer)
        with httpx.Client(base_url=stack.api_url, timeout=10, auth=auth) as api:
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                deadline = time.monotonic() + 90
                while True:
                    assert time.monotonic() < deadline, "the api did not accept a batch in 90 s"
                    try:
                        r = api.post("/v1/registrations/batch", json={"items": chunk})
                    except httpx.TransportError:
                        time.sleep(0.2)
                        continue
                    if r.status_code == 503:
                        assert int(r.headers["retry-after"]) > 0
                        unavailable += 1
                        time.sleep(0.5)
                        continue
                    assert r.status_code == 200, r.text
                    self.accepted |= {item["event_id"] for item in chunk}
                    break
        return unavailable


@dataclass
class Figures:
    scenario: str
    accepted: int
    stored: int
    reached_worker: int
    concerns: int
    expected_concerns: int
    mails: int
    distinct_mails: int
    crashes: int
    crashes_while_sending: int
    unavailable_503: int = 0
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        return self.mails - self.distinct_mails

    def check(self) -> None:
        assert self.stored == self.accepted, self
        assert self.reached_worker == self.stored, self
        assert self.concerns == self.expected_concerns, self
        assert self.distinct_mails == self.concerns, self
        assert self.duplicates <= self.crashes_while_sending, self


async def _counts(database_url: str, prefix: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    like = f"{prefix}-%"
    try:
        return {
            "stored": await conn.fetchval(
                "select count(*) from registration_events where pupil_id like $1", like
            ),
            "api_state": await conn.fetchval(
                "select count(*) from registrations where pupil_id like $1", like
            ),
            "worker_state": await conn.fetchval(
                "select count(*) from worker_registrations where pupil_id like $1", like
            ),
            "concerns": await conn.fetchval(
                "select count(*) from concerns where pupil_id like $1 and status = 'active'", like
            ),
            "pending": await conn.fetchval("select count(*) from notices where status = 'pending'"),
            "outbox": await conn.fetchval(
                "select (select count(*) from api_outbox) + (select count(*) from worker_outbox)"
            ),
        }
    finally:
        await conn.close()


def counts(stack: Stack, prefix: str) -> dict[str, int]:
    return asyncio.run(_counts(stack.database_url, prefix))


def mails(stack: Stack, prefix: str) -> tuple[int, int]:
    assert stack.mailbox is not None
    found = [m for m in stack.mailbox.messages() if f"{prefix}-" in m.message.get_content()]
    return len(found), len({m.message["Message-ID"] for m in found})


def settle(stack: Stack, workload: Workload, timeout: float = 90.0) -> dict[str, int]:
    """Waits until the pipeline is quiet: every registration reached the worker, the expected
    concerns exist, each has its mail, no notice is pending and the outboxes are empty."""
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        seen = counts(stack, workload.prefix)
        _, distinct = mails(stack, workload.prefix)
        if (
            seen["worker_state"] == seen["api_state"] == len(workload.accepted)
            and seen["concerns"] >= workload.concerned
            and distinct >= seen["concerns"]
            and seen["pending"] == 0
            and seen["outbox"] == 0
        ):
            time.sleep(1.0)  # let a late duplicate show itself
            return counts(stack, workload.prefix)
        time.sleep(0.3)
    return seen


def figures(
    stack: Stack,
    workload: Workload,
    scenario: str,
    *,
    crashes: int,
    crashes_while_sending: int,
    unavailable: int,
    started: float,
) -> Figures:
    seen = settle(stack, workload)
    total, distinct = mails(stack, workload.prefix)
    return Figures(
        scenario=scenario,
        accepted=len(workload.accepted),
        stored=seen["stored"],
        reached_worker=seen["worker_state"],
        concerns=seen["concerns"],
        expected_concerns=workload.concerned,
        mails=total,
        distinct_mails=distinct,
        crashes=crashes,
        crashes_while_sending=crashes_while_sending,
        unavailable_503=unavailable,
        seconds=round(time.monotonic() - started, 1),
    )


def table(rows: list[Figures]) -> str:
    head = (
        "| scenario | accepted | stored | reached worker | concerns (expected) | mails "
        "(distinct) | duplicates | crashes (while sending) | 503s | seconds |"
    )
    lines = [head, "|" + "---|" * 10]
    for f in rows:
        lines.append(
            f"| {f.scenario} | {f.accepted} | {f.stored} | {f.reached_worker} | "
            f"{f.concerns} ({f.expected_concerns}) | {f.mails} ({f.distinct_mails}) | "
            f"{f.duplicates} | {f.crashes} ({f.crashes_while_sending}) | "
            f"{f.unavailable_503} | {f.seconds} |"
        )
    return "\n".join(lines)
