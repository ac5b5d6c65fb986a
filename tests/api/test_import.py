"""opspor-import through the real api: bad rows, loading twice, interruption and resume."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from datetime import date
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.importer.main import main, summary
from opspor_api.importer.run import default_checkpoint, run_import
from opspor_api.models import RegistrationEvent, api_outbox
from opspor_shared.outbox import waiting_events
from tests.support import configure, registration, school_days

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "import-examples"
COLUMNS = ["event_id", "pupil_id", "school_id", "date", "slot", "category", "extent", "recorded_at"]
DAYS = school_days(date(2026, 9, 21), 10)


def rows(count: int, prefix: str = "imp") -> list[dict[str, str]]:
    return [
        registration(
            f"elev-{i % 7}", DAYS[i % len(DAYS)], slot=str(1 + i // 70), event_id=f"{prefix}-{i}"
        )
        for i in range(count)
    ]


def write_csv(path: Path, items: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(items)
    return path


def write_jsonl(path: Path, items: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


async def count(sessionmaker: async_sessionmaker[AsyncSession], sql: str) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(text(sql))).scalar_one())


def published() -> float:
    value = REGISTRY.get_sample_value("opspor_outbox_published_total", {"table": api_outbox.name})
    return value or 0.0


async def published_since(
    before: float, sessionmaker: async_sessionmaker[AsyncSession], timeout: float = 30.0
) -> float:
    """Events the relay published since `before`, once the outbox is empty (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with sessionmaker() as session:
            if not await session.scalar(waiting_events(api_outbox)):
                break
        await asyncio.sleep(0.05)
    return published() - before


async def test_bad_rows_are_reported_with_line_and_field_and_their_batch_stores_nothing(
    client: httpx.AsyncClient, tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    items = rows(15)
    items[2]["date"] = "2026-09-26"  # a Saturday; file line 4 (the header is line 1)
    items[7]["category"] = "bored"  # line 9
    items[7]["extent"] = "2"
    source = write_csv(tmp_path / "registrations.csv", items)
    out = io.StringIO()
    stats = await run_import(client, "registrations", source, batch_size=5, out=out)
    found = {(p.line, p.field) for p in stats.problems}
    assert found == {(4, "date"), (9, "category"), (9, "extent")}, stats.problems
    assert "weekend" in next(p.detail for p in stats.problems if p.line == 4)
    assert (stats.rows, stats.stored, stats.refused_rows) == (15, 5, 10)
    # Only the third batch (lines 12-16) is stored: nothing of a refused batch.
    async with sessionmaker() as session:
        stored = set((await session.scalars(select(RegistrationEvent.event_id))).all())
    assert stored == {f"imp-{i}" for i in range(10, 15)}
    summary(stats, 1.0, out)
    assert "line 4: date:" in out.getvalue() and "refused 10 rows" in out.getvalue()
    assert not default_checkpoint(source, "registrations").exists()


async def test_unreadable_lines_are_reported_and_the_batch_is_not_sent(
    client: httpx.AsyncClient, tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    good = [json.dumps(i) for i in rows(4)]
    source = tmp_path / "registrations.jsonl"
    source.write_text("\n".join([good[0], "{not json", good[1], "", "[1, 2]", good[2], good[3]]))
    # Records are lines 1, 2, 3, 5, 6, 7 (blank lines are no records): batches of two.
    stats = await run_import(client, "registrations", source, batch_size=2, out=io.StringIO())
    assert [(p.line, p.field) for p in stats.problems] == [(2, "(line)"), (5, "(line)")]
    assert (stats.stored, stats.refused_rows) == (2, 4)
    assert await count(sessionmaker, "select count(*) from registration_events") == 2


async def test_a_file_loaded_twice_stores_nothing_twice(
    client: httpx.AsyncClient, tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    source = write_jsonl(tmp_path / "registrations.jsonl", rows(30))
    before = published()
    first = await run_import(client, "registrations", source, batch_size=7, out=io.StringIO())
    again = await run_import(client, "registrations", source, batch_size=7, out=io.StringIO())
    assert (first.stored, first.duplicates) == (30, 0)
    assert (again.stored, again.duplicates, again.problems) == (0, 30, [])
    assert await count(sessionmaker, "select count(*) from registration_events") == 30
    assert await published_since(before, sessionmaker) == 30


class LosesTheFourthAnswer(httpx.AsyncBaseTransport):
    """Passes requests to the api; the fourth is stored but its answer never comes back, as
    when the importer is interrupted while a batch is being committed."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.calls = 0
        self.fourth_stored = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        response = await self.inner.handle_async_request(request)
        if self.calls == 4:
            await response.aread()
            self.fourth_stored.set()
            await asyncio.Event().wait()  # until cancelled
        return response


async def test_an_interrupted_import_resumes_from_its_checkpoint_without_duplicates(
    client: httpx.AsyncClient, tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    source = write_jsonl(tmp_path / "registrations.jsonl", rows(40))
    checkpoint = tmp_path / "resume.checkpoint"
    before = published()
    flaky = LosesTheFourthAnswer(client._transport)
    async with httpx.AsyncClient(
        transport=flaky, base_url="http://api", auth=client.auth
    ) as interrupted:
        task = asyncio.create_task(
            run_import(
                interrupted,
                "registrations",
                source,
                checkpoint_path=checkpoint,
                batch_size=5,
                concurrency=1,
                out=io.StringIO(),
            )
        )
        await asyncio.wait_for(flaky.fourth_stored.wait(), timeout=30)
        task.cancel()  # what Ctrl-C does to the running import
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    saved = json.loads(checkpoint.read_text())
    assert saved["line"] == 15 and saved["totals"]["stored"] == 15
    assert await count(sessionmaker, "select count(*) from registration_events") == 20

    stats = await run_import(
        client, "registrations", source, checkpoint_path=checkpoint, batch_size=5, out=io.StringIO()
    )
    # Lines 1-15 are skipped; the batch whose answer was lost comes back as duplicates.
    assert (stats.skipped, stats.rows, stats.stored, stats.duplicates) == (15, 25, 20, 5)
    assert await count(sessionmaker, "select count(*) from registration_events") == 40
    assert await count(sessionmaker, "select count(*) from registrations") == 40
    assert await published_since(before, sessionmaker) == 40
    assert not checkpoint.exists()


async def test_a_checkpoint_of_another_file_is_refused(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "registrations.jsonl", rows(3))
    checkpoint = tmp_path / "other.checkpoint"
    checkpoint.write_text(
        json.dumps({"kind": "registrations", "fingerprint": "1:ab", "line": 2, "totals": {}})
    )
    try:
        await run_import(
            client, "registrations", source, checkpoint_path=checkpoint, out=io.StringIO()
        )
    except SystemExit as exc:
        assert "another file" in str(exc)
    else:
        raise AssertionError("a foreign checkpoint was accepted")


async def test_school_years_and_enrolments_load_from_csv(
    client: httpx.AsyncClient, tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    years = tmp_path / "school-years.csv"
    years.write_text(
        "school_id,label,first_day,last_day,closures,extra_days\n"
        'vestbjerg,2025-2026,2025-08-11,2026-06-26,"[{""first_day"": ""2025-10-13"", '
        '""last_day"": ""2025-10-17"", ""reason"": ""efterårsferie""}]",[]\n'
        "vestbjerg,2027-2028,2027-08-09,2027-06-20,[],[]\n"
    )
    stats = await run_import(client, "school-years", years, out=io.StringIO())
    assert stats.stored == 1
    # Line 3 ends before it starts: refused by the api, reported by line.
    assert [p.line for p in stats.problems] == [3]
    enrolments = tmp_path / "enrolments.csv"
    enrolments.write_text(
        "event_id,school_id,pupil_id,enrolled_from,enrolled_until,recorded_at\n"
        "enr-1,vestbjerg,elev-1,2025-08-11,,2025-08-01T08:00:00+02:00\n"
        "enr-2,vestbjerg,elev-2,2025-08-11,2026-02-27,2026-02-27T08:00:00+01:00\n"
        "enr-3,vestbjerg,,2025-08-11,,2025-08-01T08:00:00+02:00\n"
    )
    stats = await run_import(client, "enrolments", enrolments, out=io.StringIO())
    assert stats.stored == 2
    assert [(p.line, p.field) for p in stats.problems] == [(4, "pupil_id")]
    async with sessionmaker() as session:
        assert (await session.scalar(select(func.count()).select_from(text("enrolments")))) == 2
        assert (
            await session.scalar(text("select count(*) from school_years where label='2025-2026'"))
        ) == 1


async def test_the_documented_example_files_load(
    client: httpx.AsyncClient, tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    for kind, name, stored in (
        ("school-years", "school-years.csv", 1),
        ("enrolments", "enrolments.csv", 2),
        ("registrations", "registrations.csv", 3),
        ("registrations", "registrations.jsonl", 2),
    ):
        copy = tmp_path / name
        copy.write_bytes((EXAMPLES / name).read_bytes())
        stats = await run_import(client, kind, copy, out=io.StringIO())  # type: ignore[arg-type]
        assert (stats.stored, stats.problems) == (stored, []), (name, stats.problems)
    assert await count(sessionmaker, "select count(*) from registrations") == 5


def test_the_command_refuses_to_start_without_a_token_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPSPOR_TOKEN", raising=False)
    source = write_jsonl(tmp_path / "r.jsonl", rows(1))
    assert main(["registrations", str(source)]) == 2
    assert "token" in capsys.readouterr().err
    monkeypatch.setenv("OPSPOR_TOKEN", "secret-token-value")
    assert main(["registrations", str(tmp_path / "missing.csv")]) == 2
    assert "secret-token-value" not in capsys.readouterr().err
