"""Phase (b): end-to-end latency at a steady, open-loop registration rate.

The plan is a fixed clock of `rate` single POSTs per second. Every 1/crossings_per_second
seconds a fresh "crossing pupil" gets the 5th of 5 consecutive unauthorized school days; its
first 4 days were posted 0.7-3 s earlier as part of the same stream. All other slots carry
"filler" registrations of pupils that never reach a limit. Sends are fired on schedule
whether or not earlier responses have arrived (open loop), so a slow server shows up as
latency, not as a lower offered rate.

Latency of one crossing pupil = arrival of its concern mail in the mailbox minus the moment
the client received the HTTP response of the crossing POST. Both are wall-clock readings on
this machine: the mailbox (in this process, another thread) names each stored file after
`time.time_ns()` taken when the SMTP DATA command completed; the client reads `time.time()`
right after the response.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import httpx

from tests.bench.ingest import HEADERS, warm_up
from tests.bench.stats import summary
from tests.bench.workload import MAX_DAYS_PER_PUPIL, quiet_pupil_items, registration

CROSSING_PREFIX = "lat-c"
FILLER_PREFIX = "lat-f"
# When the first four days of a crossing pupil are sent, in seconds before the crossing POST.
EARLY_LEADS = (3.0, 2.3, 1.5, 0.7)
PUPIL_RE = re.compile(rf"elev-{CROSSING_PREFIX}-\d+")

Role = Literal["early", "crossing", "filler"]


@dataclass
class Send:
    slot: int
    pupil: str
    role: Role
    body: bytes
    lag_ms: float = 0.0  # how late the client fired it relative to the plan
    sent_at: float = 0.0  # wall clock
    accepted_at: float | None = None  # wall clock, response received with 201
    status: int | None = None
    error: str | None = None


@dataclass
class Mail:
    path: Path
    arrived_at: float  # the mailbox's time_ns stamp in the file name
    mtime: float
    pupil: str | None
    subject: str


@dataclass
class LatencyRun:
    rate: float
    seconds: float
    plan: list[Send]
    first_send: float = 0.0
    last_send: float = 0.0
    last_response: float = 0.0
    mails: dict[str, Mail] = field(default_factory=dict)
    extra_mails: list[str] = field(default_factory=list)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def crossing(self) -> list[Send]:
        return [s for s in self.plan if s.role == "crossing"]

    def figures(self) -> dict[str, Any]:
        sends = self.plan
        ok = [s for s in sends if s.accepted_at is not None]
        span = self.last_send - self.first_send
        expected = self.crossing()
        e2e: list[float] = []
        missing: list[str] = []
        stamp_vs_mtime: list[float] = []
        for s in expected:
            mail = self.mails.get(s.pupil)
            if mail is None or s.accepted_at is None:
                missing.append(s.pupil)
                continue
            e2e.append((mail.arrived_at - s.accepted_at) * 1000)
            stamp_vs_mtime.append(abs(mail.mtime - mail.arrived_at) * 1000)
        early_late = self._crossings_sent_before_early_accepted()
        return {
            "planned_rate_per_second": self.rate,
            "planned_seconds": self.seconds,
            "posts_planned": len(sends),
            "posts_accepted": len(ok),
            "posts_failed": len(sends) - len(ok),
            "failures_sample": [
                f"{s.pupil}: {s.status} {s.error}" for s in sends if s.accepted_at is None
            ][:5],
            "achieved_send_rate_per_second": round((len(sends) - 1) / span, 1) if span else None,
            "achieved_accept_rate_per_second": round(
                len(ok) / (self.last_response - self.first_send), 1
            )
            if ok
            else None,
            "send_lag_ms": summary([s.lag_ms for s in sends]),
            "post_latency_ms": summary(
                [(s.accepted_at - s.sent_at) * 1000 for s in ok if s.accepted_at]
            ),
            "mails_expected": len(expected),
            "mails_matched": len(e2e),
            "mails_missing": missing,
            "mails_unexpected": self.extra_mails,
            "crossings_sent_before_their_early_days_were_accepted": early_late,
            "e2e_latency_ms": summary(e2e),
            "stages_ms": self.stages,
            "mail_stamp_vs_file_mtime_ms_max": round(max(stamp_vs_mtime), 1)
            if stamp_vs_mtime
            else None,
        }

    def _crossings_sent_before_early_accepted(self) -> int:
        latest_early: dict[str, float] = {}
        for s in self.plan:
            if s.role == "early":
                latest_early[s.pupil] = max(
                    latest_early.get(s.pupil, 0.0), s.accepted_at or float("inf")
                )
        return sum(
            1 for s in self.crossing() if latest_early.get(s.pupil, 0.0) > (s.sent_at or 0.0)
        )


def _encode(item: dict[str, Any]) -> bytes:
    return json.dumps(item, separators=(",", ":")).encode()


def build_plan(
    school: str, days: Sequence[date], rate: float, seconds: float, crossings_per_second: float
) -> list[Send]:
    """One Send per slot (slot i fires at i / rate seconds), bodies encoded up front."""
    slots = int(rate * seconds)
    spacing = round(rate / crossings_per_second)
    run = days[-5:]  # 5 consecutive school days ending at the worker's horizon
    plan: dict[int, Send] = {}
    first = ((int(max(EARLY_LEADS) * rate) + spacing) // spacing) * spacing
    for n, crossing_slot in enumerate(range(first, slots, spacing)):
        pupil = f"elev-{CROSSING_PREFIX}-{n:05d}"
        for k, lead in enumerate(EARLY_LEADS):
            slot = crossing_slot - round(lead * rate)
            while slot in plan:  # keep the slot grid; take the nearest earlier free slot
                slot -= 1
            item = registration(
                f"{CROSSING_PREFIX}-{n:05d}-{k}", pupil, school, run[k], "unauthorized"
            )
            plan[slot] = Send(slot, pupil, "early", _encode(item))
        item = registration(f"{CROSSING_PREFIX}-{n:05d}-4", pupil, school, run[4], "unauthorized")
        if crossing_slot in plan:
            raise RuntimeError("crossing slot collision; choose other EARLY_LEADS")
        plan[crossing_slot] = Send(crossing_slot, pupil, "crossing", _encode(item))
    filler: list[dict[str, Any]] = []
    pupil_index = 0
    for slot in range(slots):
        if slot in plan:
            continue
        if not filler:
            filler = quiet_pupil_items(FILLER_PREFIX, school, pupil_index, days, MAX_DAYS_PER_PUPIL)
            pupil_index += 1
        item = filler.pop(0)
        plan[slot] = Send(slot, item["pupil_id"], "filler", _encode(item))
    return [plan[s] for s in sorted(plan)]


async def send_plan(
    api_url: str, plan: list[Send], rate: float, max_connections: int, timeout: float
) -> LatencyRun:
    run = LatencyRun(rate=rate, seconds=len(plan) / rate, plan=plan)
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=timeout) as client:
        await warm_up(client, min(max_connections, 16))

        async def post(s: Send) -> None:
            s.sent_at = time.time()
            try:
                r = await client.post("/v1/registrations", content=s.body, headers=HEADERS)
            except httpx.HTTPError as exc:
                s.error = f"{type(exc).__name__}: {exc}"
                return
            now = time.time()
            s.status = r.status_code
            if r.status_code == 201:
                s.accepted_at = now
            else:
                s.error = r.text[:200]
            run.last_response = max(run.last_response, now)

        t0 = time.perf_counter() + 0.2
        tasks: list[asyncio.Task[None]] = []
        for s in plan:
            target = t0 + s.slot / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            s.lag_ms = max(0.0, (time.perf_counter() - target) * 1000)
            tasks.append(asyncio.create_task(post(s)))
        run.first_send = plan[0].sent_at
        run.last_send = plan[-1].sent_at
        await asyncio.gather(*tasks)
    return run


def read_mail(path: Path) -> Mail:
    raw = path.read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(preferencelist=("plain",))
    body = part.get_content() if isinstance(part, EmailMessage) else ""
    found = PUPIL_RE.search(body)
    return Mail(
        path=path,
        arrived_at=int(path.name.split("-", 1)[0]) / 1e9,
        mtime=path.stat().st_mtime,
        pupil=found.group(0) if found else None,
        subject=str(msg.get("Subject", "")),
    )


async def collect_mail(run: LatencyRun, directory: Path, before: set[str], timeout: float) -> None:
    """Reads new .eml files until every crossing pupil has one, or `timeout` seconds pass."""
    wanted = {s.pupil for s in run.crossing()}
    seen: set[str] = set(before)
    deadline = time.monotonic() + timeout
    while True:
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".eml") or name in seen:
                continue
            seen.add(name)
            mail = read_mail(directory / name)
            if mail.pupil in wanted and mail.pupil not in run.mails:
                run.mails[mail.pupil] = mail
            else:
                run.extra_mails.append(f"{name}: {mail.subject}")
        if wanted <= run.mails.keys() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.2)


STAGE_SQL = """
select c.pupil_id,
       extract(epoch from c.created_at) as worker_txn_start,
       extract(epoch from n.created_at) as alerter_txn_start
from concerns c
join notices n on n.concern_id = c.concern_id and n.kind = 'raised'
where c.pupil_id like $2 and c.rule_id = $1
"""


async def stage_breakdown(conn: Any, run: LatencyRun) -> None:
    """Where the time goes, from transaction start times (PostgreSQL now()) on the same clock.

    accepted -> worker txn start: api outbox relay, Kafka, the worker's fetch;
    worker txn start -> alerter txn start: evaluation + commit, worker relay, Kafka, fetch;
    alerter txn start -> mail stored: record + commit, delivery loop wake-up, SMTP + TLS.
    """
    rows = await conn.fetch(STAGE_SQL, "consecutive-5", f"elev-{CROSSING_PREFIX}-%")
    accepted = {s.pupil: s.accepted_at for s in run.crossing() if s.accepted_at}
    a_w: list[float] = []
    w_n: list[float] = []
    n_m: list[float] = []
    for r in rows:
        pupil = r["pupil_id"]
        mail = run.mails.get(pupil)
        if pupil not in accepted or mail is None:
            continue
        a_w.append((float(r["worker_txn_start"]) - accepted[pupil]) * 1000)
        w_n.append((float(r["alerter_txn_start"]) - float(r["worker_txn_start"])) * 1000)
        n_m.append((mail.arrived_at - float(r["alerter_txn_start"])) * 1000)
    run.stages = {
        "accepted_to_worker_txn_start": summary(a_w),
        "worker_txn_start_to_alerter_txn_start": summary(w_n),
        "alerter_txn_start_to_mail_stored": summary(n_m),
    }
