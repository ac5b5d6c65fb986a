"""Phase (b): end-to-end latency at a steady, open-loop registration rate.

The plan is a fixed clock of `rate` registrations per second, sent `batch` at a time (batch 1:
single POST /v1/registrations; otherwise POST /v1/registrations/batch, fired when its first
registration is due). Every 1/crossings_per_second seconds a fresh "crossing pupil" gets the
5th of 5 consecutive unauthorized school days; its first 4 days were posted 0.7-3 s earlier
as part of the same stream. All other registrations belong to "filler" pupils that never
reach a limit. POSTs are fired on schedule whether or not earlier responses have arrived
(open loop), so a slow server shows up as latency, not as a lower offered rate.

Single POSTs are possible (--latency-batch 1), but on the 2-core reference machine the api
serves only about 200 single POSTs/s at full load (see the 'single' row of phase (a)), so
200/s single POSTs measure an overloaded queue; the default is 50 registrations per POST at
2,000 registrations/s (issue 11's national peak).

Latency of one crossing pupil = arrival of its concern mail in the mailbox minus the moment
the client received the HTTP response of the crossing POST. Its concern.raised event is also
timed where an integrator sees it: a consumer in this process reads absence.concerns.v1 from
the end while the plan runs (fetch wait 10 ms) and notes `time.time()` at each arrival.
All are wall-clock readings on this machine: the mailbox (in this process, another thread)
names each stored file after `time.time_ns()` taken when the SMTP DATA command completed;
the client reads `time.time()` right after the response.
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
from aiokafka import AIOKafkaConsumer

from opspor_shared.events import CONCERN_RAISED
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
class Item:
    slot: int
    pupil: str
    role: Role
    registration: dict[str, Any]
    post: int = -1  # index of the POST that carries it


@dataclass
class Post:
    index: int
    offset: float  # seconds after the start at which the plan fires it
    items: list[Item]
    body: bytes = b""
    lag_ms: float = 0.0  # how late the client fired it relative to the plan
    sent_at: float = 0.0  # wall clock
    accepted_at: float | None = None  # wall clock, response received and accepted
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
    batch: int
    items: list[Item]
    posts: list[Post]
    first_send: float = 0.0
    last_send: float = 0.0
    last_response: float = 0.0
    mails: dict[str, Mail] = field(default_factory=dict)
    # Crossing pupil -> when its concern.raised was read from Kafka (time.time()).
    on_kafka: dict[str, float] = field(default_factory=dict)
    extra_mails: list[str] = field(default_factory=list)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def crossing(self) -> list[Item]:
        return [i for i in self.items if i.role == "crossing"]

    def accepted_at(self, item: Item) -> float | None:
        return self.posts[item.post].accepted_at

    def figures(self) -> dict[str, Any]:
        ok = [p for p in self.posts if p.accepted_at is not None]
        span = self.last_send - self.first_send
        expected = self.crossing()
        e2e: list[float] = []
        kafka: list[float] = []
        missing: list[str] = []
        stamp_vs_mtime: list[float] = []
        for item in expected:
            mail = self.mails.get(item.pupil)
            accepted = self.accepted_at(item)
            if accepted is not None and item.pupil in self.on_kafka:
                kafka.append((self.on_kafka[item.pupil] - accepted) * 1000)
            if mail is None or accepted is None:
                missing.append(item.pupil)
                continue
            e2e.append((mail.arrived_at - accepted) * 1000)
            stamp_vs_mtime.append(abs(mail.mtime - mail.arrived_at) * 1000)
        registrations_ok = sum(len(p.items) for p in ok)
        return {
            "planned_rate_per_second": self.rate,
            "planned_seconds": self.seconds,
            "registrations_per_post": self.batch,
            "endpoint": "/v1/registrations" if self.batch == 1 else "/v1/registrations/batch",
            "registrations_planned": len(self.items),
            "posts_planned": len(self.posts),
            "posts_accepted": len(ok),
            "posts_failed": len(self.posts) - len(ok),
            "failures_sample": [
                f"{p.index}: {p.status} {p.error}" for p in self.posts if p.accepted_at is None
            ][:5],
            "achieved_send_rate_per_second": round((len(self.posts) - 1) * self.batch / span, 1)
            if span
            else None,
            "achieved_accept_rate_per_second": round(
                registrations_ok / (self.last_response - self.first_send), 1
            )
            if ok
            else None,
            "send_lag_ms": summary([p.lag_ms for p in self.posts]),
            "post_latency_ms": summary(
                [(p.accepted_at - p.sent_at) * 1000 for p in ok if p.accepted_at]
            ),
            "mails_expected": len(expected),
            "mails_matched": len(e2e),
            "mails_missing": missing,
            "mails_unexpected": self.extra_mails,
            "crossings_sent_before_their_early_days_were_accepted": self._early_late(),
            "e2e_latency_ms": summary(e2e),
            "concerns_on_kafka_expected": len(expected),
            "accepted_to_concern_on_kafka_ms": summary(kafka),
            "stages_ms": self.stages,
            "mail_stamp_vs_file_mtime_ms_max": round(max(stamp_vs_mtime), 1)
            if stamp_vs_mtime
            else None,
        }

    def _early_late(self) -> int:
        latest_early: dict[str, float] = {}
        for item in self.items:
            if item.role == "early":
                accepted = self.accepted_at(item) or float("inf")
                latest_early[item.pupil] = max(latest_early.get(item.pupil, 0.0), accepted)
        return sum(
            1
            for item in self.crossing()
            if latest_early.get(item.pupil, 0.0) > self.posts[item.post].sent_at
        )


def build_plan(
    school: str,
    days: Sequence[date],
    rate: float,
    seconds: float,
    crossings_per_second: float,
    batch: int,
) -> tuple[list[Item], list[Post]]:
    """Registration i is due at i / rate seconds; POST j carries items [j*batch, (j+1)*batch)
    and fires when its first item is due. Bodies are JSON-encoded here, before any timing."""
    slots = int(rate * seconds)
    spacing = round(rate / crossings_per_second)
    run = days[-5:]  # 5 consecutive school days ending at the worker's horizon
    plan: dict[int, Item] = {}
    first = ((int(max(EARLY_LEADS) * rate) + spacing) // spacing) * spacing
    for n, crossing_slot in enumerate(range(first, slots, spacing)):
        pupil = f"elev-{CROSSING_PREFIX}-{n:05d}"
        for k, lead in enumerate(EARLY_LEADS):
            slot = crossing_slot - round(lead * rate)
            while slot in plan:  # keep the slot grid; take the nearest earlier free slot
                slot -= 1
            if slot < 0:
                raise RuntimeError("no free slot for an early day; lower crossings_per_second")
            reg = registration(
                f"{CROSSING_PREFIX}-{n:05d}-{k}", pupil, school, run[k], "unauthorized"
            )
            plan[slot] = Item(slot, pupil, "early", reg)
        if crossing_slot in plan:
            raise RuntimeError("crossing slot collision; choose other EARLY_LEADS")
        reg = registration(f"{CROSSING_PREFIX}-{n:05d}-4", pupil, school, run[4], "unauthorized")
        plan[crossing_slot] = Item(crossing_slot, pupil, "crossing", reg)
    filler: list[dict[str, Any]] = []
    pupil_index = 0
    for slot in range(slots):
        if slot in plan:
            continue
        if not filler:
            filler = quiet_pupil_items(FILLER_PREFIX, school, pupil_index, days, MAX_DAYS_PER_PUPIL)
            pupil_index += 1
        reg = filler.pop(0)
        plan[slot] = Item(slot, reg["pupil_id"], "filler", reg)
    items = [plan[s] for s in sorted(plan)]
    posts: list[Post] = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        post = Post(index=len(posts), offset=chunk[0].slot / rate, items=chunk)
        for item in chunk:
            item.post = post.index
        regs = [i.registration for i in chunk]
        post.body = _encode(regs[0] if batch == 1 else {"items": regs})
        posts.append(post)
    return items, posts


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def send_plan(
    api_url: str,
    items: list[Item],
    posts: list[Post],
    rate: float,
    batch: int,
    max_connections: int,
    timeout: float,
    headers: dict[str, str] = HEADERS,
) -> LatencyRun:
    run = LatencyRun(rate=rate, seconds=len(items) / rate, batch=batch, items=items, posts=posts)
    path = "/v1/registrations" if batch == 1 else "/v1/registrations/batch"
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=timeout) as client:
        await warm_up(client, min(max_connections, 8))

        async def post(p: Post) -> None:
            p.sent_at = time.time()
            try:
                r = await client.post(path, content=p.body, headers=headers)
            except httpx.HTTPError as exc:
                p.error = f"{type(exc).__name__}: {exc}"
                return
            now = time.time()
            p.status = r.status_code
            if _accepted(r, batch, len(p.items)):
                p.accepted_at = now
            else:
                p.error = r.text[:200]
            run.last_response = max(run.last_response, now)

        t0 = time.perf_counter() + 0.2
        tasks: list[asyncio.Task[None]] = []
        for p in posts:
            target = t0 + p.offset
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            p.lag_ms = max(0.0, (time.perf_counter() - target) * 1000)
            tasks.append(asyncio.create_task(post(p)))
        await asyncio.gather(*tasks)
        run.first_send = min(p.sent_at for p in posts)
        run.last_send = max(p.sent_at for p in posts)
    return run


def _accepted(response: httpx.Response, batch: int, size: int) -> bool:
    if batch == 1:
        return response.status_code == 201
    try:
        return response.status_code == 200 and response.json().get("inserted") == size
    except ValueError:
        return False


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
    wanted = {i.pupil for i in run.crossing()}
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


class ConcernWatch:
    """Reads the concerns topic from its end and notes when each crossing pupil's
    concern.raised arrives, as a municipal integrator's consumer would see it."""

    def __init__(self, bootstrap_servers: str, topic: str, arrived: dict[str, float]) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            auto_offset_reset="latest",
            fetch_max_wait_ms=10,
        )
        self._arrived = arrived
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ConcernWatch:
        await self._consumer.start()
        # Resolve the end of every partition now, before the first crossing is posted.
        for _ in range(100):  # at most 10 s for the assignment
            if self._consumer.assignment():
                break
            await asyncio.sleep(0.1)
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for record in self._consumer:
            event = json.loads(record.value or b"{}")
            pupil = event.get("subject", "")
            if event.get("type") == CONCERN_RAISED and PUPIL_RE.fullmatch(pupil):
                self._arrived.setdefault(pupil, time.time())

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


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
    accepted: dict[str, float] = {}
    for item in run.crossing():
        if (at := run.accepted_at(item)) is not None:
            accepted[item.pupil] = at
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
