"""The import itself: records in batches through the api, an ordered checkpoint, progress.

Decision: the importer is an HTTP client of the api with a bearer token, not a second way into
the database. Everything a school system's request goes through applies unchanged: validation
(school days, retention, national ID numbers), tenancy, idempotency by event id, the audit log,
and the outbox that feeds the worker. A file loaded twice stores nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import quote

import httpx

from opspor_api.importer.files import (
    Format,
    Record,
    count_records,
    detect_format,
    fingerprint,
    read_records,
)

Kind = Literal["registrations", "enrolments", "school-years"]
KINDS: tuple[Kind, ...] = ("registrations", "enrolments", "school-years")
# Registrations travel in batches (all or nothing per batch); the others one row per request.
MAX_BATCH = 5000
RETRIES = 8


class ImportAborted(Exception):
    """The api could not be reached or failed repeatedly; the checkpoint allows a resume."""


@dataclass
class Problem:
    line: int
    field: str
    detail: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.detail}"


@dataclass
class Stats:
    rows: int = 0  # rows handled in this run
    skipped: int = 0  # rows done by an earlier, interrupted run (from the checkpoint)
    stored: int = 0
    duplicates: int = 0
    refused_rows: int = 0  # rows of refused batches (nothing of a refused batch is stored)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Outcome:
    stored: int
    duplicates: int
    problems: list[Problem]


@dataclass
class Batch:
    records: list[Record]

    @property
    def last_line(self) -> int:
        return self.records[-1].line


class Checkpoint:
    """The last line up to which every record is done, written atomically after each batch."""

    def __init__(self, path: Path, kind: Kind, source: Path) -> None:
        self.path = path
        self.kind = kind
        self.source = source
        self.fingerprint = fingerprint(source)
        self.line = 0
        self.totals: dict[str, int] = {"stored": 0, "duplicates": 0, "refused_rows": 0}

    def load(self) -> None:
        if not self.path.exists():
            return
        saved = json.loads(self.path.read_text())
        if saved.get("fingerprint") != self.fingerprint or saved.get("kind") != self.kind:
            raise SystemExit(
                f"{self.path} belongs to another file or kind; delete it to start from the top"
            )
        self.line = int(saved["line"])
        self.totals = {k: int(v) for k, v in saved["totals"].items()}

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "kind": self.kind,
                    "file": str(self.source),
                    "fingerprint": self.fingerprint,
                    "line": self.line,
                    "totals": self.totals,
                }
            )
        )
        os.replace(tmp, self.path)


def _batches(records: Iterator[Record], size: int, after_line: int) -> Iterator[Batch]:
    batch: list[Record] = []
    for record in records:
        if record.line <= after_line:
            continue
        batch.append(record)
        if len(batch) >= size:
            yield Batch(batch)
            batch = []
    if batch:
        yield Batch(batch)


def _field_of(pointer: str, kind: Kind, batch: Batch) -> tuple[int, str]:
    """(line, field) of an api error pointer such as /items/3/date or /enrolled_from."""
    parts = [p for p in pointer.split("/") if p]
    if kind == "registrations" and len(parts) >= 2 and parts[0] == "items" and parts[1].isdigit():
        index = int(parts[1])
        if index < len(batch.records):
            return batch.records[index].line, ".".join(parts[2:]) or "(row)"
    if parts and parts[0] in ("path", "query"):
        parts = parts[1:]
    return batch.records[0].line, ".".join(parts) or "(row)"


def _request(kind: Kind, batch: Batch) -> tuple[str, str, dict[str, Any]]:
    if kind == "registrations":
        return "POST", "/v1/registrations/batch", {"items": [r.body for r in batch.records]}
    body = dict(batch.records[0].body or {})
    # Quoted: an id with a slash must reach the api's validation, not another route.
    school = quote(str(body.pop("school_id", "")), safe="")
    if kind == "enrolments":
        pupil = quote(str(body.pop("pupil_id", "")), safe="")
        return "PUT", f"/v1/schools/{school}/enrolments/{pupil}", body
    label = quote(str(body.pop("label", "")), safe="")
    return "PUT", f"/v1/schools/{school}/school-years/{label}", body


def _missing_keys(kind: Kind, body: dict[str, Any]) -> list[str]:
    needed = {"enrolments": ("school_id", "pupil_id"), "school-years": ("school_id", "label")}
    return [k for k in needed.get(kind, ()) if not body.get(k)]


async def _send(client: httpx.AsyncClient, kind: Kind, batch: Batch) -> Outcome:
    unreadable = [Problem(r.line, *r.problem) for r in batch.records if r.problem is not None] + [
        Problem(r.line, key, "is required")
        for r in batch.records
        if r.body is not None
        for key in _missing_keys(kind, r.body)
    ]
    if unreadable:
        # The api never sees a batch with an unreadable line: all or nothing, as for the api.
        return Outcome(0, 0, unreadable)
    method, url, body = _request(kind, batch)
    wait = 0.5
    for attempt in range(RETRIES):
        try:
            r = await client.request(method, url, json=body)
        except httpx.TransportError as exc:
            if attempt == RETRIES - 1:
                raise ImportAborted(f"the api is unreachable ({type(exc).__name__})") from exc
            await asyncio.sleep(wait)
            wait = min(wait * 2, 30.0)
            continue
        if r.status_code == 429 or r.status_code >= 500:
            if attempt == RETRIES - 1:
                raise ImportAborted(f"the api answers {r.status_code} again and again")
            retry_after = r.headers.get("retry-after", "")
            await asyncio.sleep(float(retry_after) if retry_after.isdigit() else wait)
            wait = min(wait * 2, 30.0)
            continue
        return _outcome(kind, batch, r)
    raise AssertionError("unreachable")


def _outcome(kind: Kind, batch: Batch, r: httpx.Response) -> Outcome:
    if r.status_code in (401, 403):
        raise ImportAborted(f"the api refuses the token ({r.status_code}): {_detail(r)}")
    if 200 <= r.status_code < 300:
        if kind == "registrations":
            result = r.json()
            return Outcome(result["inserted"], result["duplicates"], [])
        # Enrolments and school years: the newest report wins, a repeat changes nothing.
        return Outcome(1, 0, [])
    problems: list[Problem] = []
    try:
        document = r.json()
    except ValueError:
        document = {}
    for error in document.get("errors") or []:
        line, name = _field_of(str(error.get("pointer", "")), kind, batch)
        problems.append(Problem(line, name, str(error.get("detail", ""))))
    if not problems:
        problems.append(Problem(batch.records[0].line, "(row)", _detail(r)))
    return Outcome(0, 0, problems)


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail") or r.reason_phrase)
    except ValueError:
        return f"HTTP {r.status_code}"


class Progress:
    """Rows, rate and time left on one line (a terminal) or every few seconds (a log)."""

    def __init__(self, total: int, out: TextIO, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.out = out
        self.clock = clock
        self.started = clock()
        self.last = 0.0
        self.tty = out.isatty()

    def show(self, done: int, skipped: int, final: bool = False) -> None:
        now = self.clock()
        if not final and now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        left = max(self.total - skipped - done, 0)
        eta = f"{left / rate:,.0f} s" if rate > 0 else "?"
        pct = 100.0 * (skipped + done) / self.total if self.total else 100.0
        line = (
            f"{skipped + done:,}/{self.total:,} rows ({pct:.1f} %), {rate:,.0f} rows/s, "
            f"time left {eta}"
        )
        self.out.write(("\r" + line) if self.tty else (line + "\n"))
        if final and self.tty:
            self.out.write("\n")
        self.out.flush()


async def run_import(
    client: httpx.AsyncClient,
    kind: Kind,
    source: Path,
    *,
    checkpoint_path: Path | None = None,
    fmt: Format | None = None,
    batch_size: int = MAX_BATCH,
    concurrency: int = 2,
    out: TextIO,
) -> Stats:
    """Loads `source` through the api. Batches are sent up to `concurrency` at a time and the
    checkpoint advances in file order, so after an interruption no row is skipped; a batch in
    flight at the interruption is sent again and answers as duplicates."""
    fmt = fmt or detect_format(source)
    size = min(batch_size, MAX_BATCH) if kind == "registrations" else 1
    checkpoint = Checkpoint(checkpoint_path or default_checkpoint(source, kind), kind, source)
    checkpoint.load()
    stats = Stats()
    total = count_records(source, fmt)
    stats.skipped = sum(1 for _ in _upto(read_records(source, fmt), checkpoint.line))
    progress = Progress(total, out)
    in_flight: deque[tuple[Batch, asyncio.Task[Outcome]]] = deque()

    def settle(batch: Batch, outcome: Outcome) -> None:
        stats.rows += len(batch.records)
        stats.stored += outcome.stored
        stats.duplicates += outcome.duplicates
        if outcome.problems:
            stats.refused_rows += len(batch.records)
            stats.problems.extend(outcome.problems)
            for problem in outcome.problems:
                out.write(f"refused: {problem}\n")
        checkpoint.line = batch.last_line
        checkpoint.totals["stored"] += outcome.stored
        checkpoint.totals["duplicates"] += outcome.duplicates
        checkpoint.totals["refused_rows"] += len(batch.records) if outcome.problems else 0
        checkpoint.save()
        progress.show(stats.rows, stats.skipped)

    try:
        for batch in _batches(read_records(source, fmt), size, checkpoint.line):
            if len(in_flight) >= max(concurrency, 1):
                done_batch, task = in_flight.popleft()
                settle(done_batch, await task)
            in_flight.append((batch, asyncio.create_task(_send(client, kind, batch))))
        while in_flight:
            done_batch, task = in_flight.popleft()
            settle(done_batch, await task)
    finally:
        for _, task in in_flight:
            task.cancel()
        await asyncio.gather(*(t for _, t in in_flight), return_exceptions=True)
    progress.show(stats.rows, stats.skipped, final=True)
    # Done: the next run of this file starts from the top (and finds duplicates only).
    checkpoint.path.unlink(missing_ok=True)
    return stats


def _upto(records: Iterator[Record], line: int) -> Iterator[Record]:
    for record in records:
        if record.line > line:
            return
        yield record


def default_checkpoint(source: Path, kind: Kind) -> Path:
    return source.with_name(f"{source.name}.{kind}.checkpoint")
