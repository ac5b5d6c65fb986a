"""The audit log: one row per pupil per request for every read or write of pupil-level data,
in the request's transaction; append-only in the database; listed per pupil for the
municipality administrator."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_api.concerns.repository import ConcernRepository
from opspor_api.models import AuditEntry, RegistrationEvent
from opspor_shared.auth import Role
from tests.api.test_concerns import concern_event
from tests.auth import bearer
from tests.support import configure, registration, school_days

MONDAY = date(2026, 9, 21)


async def audit_rows(sessionmaker: async_sessionmaker[AsyncSession]) -> list[AuditEntry]:
    async with sessionmaker() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


async def add_concern(
    sessionmaker: async_sessionmaker[AsyncSession], pupil: str, level: str = "concern"
) -> uuid.UUID:
    data = concern_event(pupil, MONDAY, level=level).data
    row: dict[str, Any] = {
        k: data[k] for k in ("revision", "status", "pupil_id", "school_id", "level")
    } | {
        "concern_id": uuid.UUID(data["concern_id"]),
        "municipality_id": "aalborg",
        "crossing_date": MONDAY,
        "pack_id": "dk-aalborg-2018",
        "rule_id": "consecutive-5",
        "rule_version": "1",
        "explanation": data["explanation"],
    }
    async with sessionmaker() as session, session.begin():
        await ConcernRepository(session).apply([row])
    return uuid.UUID(data["concern_id"])


def summary(rows: list[AuditEntry]) -> list[tuple[Any, ...]]:
    return [(r.method, r.endpoint, r.pupil_id, r.school_id, r.purpose, r.status) for r in rows]


async def test_every_pupil_level_route_leaves_one_row_per_pupil(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    system = bearer(Role.SCHOOL_SYSTEM, subject="sis-vestbjerg", client="skoleintra")
    staff = bearer(Role.SCHOOL_STAFF, subject="laerer-1")
    r = await client.post("/v1/registrations", json=registration("p1", MONDAY), headers=system)
    assert r.status_code == 201
    days = school_days(MONDAY + timedelta(days=1), 3)
    batch = [registration("p1", d) for d in days] + [registration("p2", days[0])]
    r = await client.post("/v1/registrations/batch", json={"items": batch}, headers=system)
    assert r.status_code == 200
    retraction = registration("p2", days[0]) | {"recorded_at": "2026-09-30T08:00:00+00:00"}
    del retraction["category"], retraction["extent"]
    r = await client.post("/v1/registrations/retractions", json=retraction, headers=system)
    assert r.status_code == 201
    r = await client.get("/v1/pupils/p1/registrations", headers=staff | {"X-Purpose": "follow-up"})
    assert r.status_code == 200 and len(r.json()) == 4
    cid = await add_concern(sessionmaker, "p1")
    await add_concern(sessionmaker, "p2")
    assert (await client.get("/v1/pupils/p1/concerns", headers=staff)).status_code == 200
    page = await client.get("/v1/schools/vestbjerg/concerns", headers=staff)
    assert len(page.json()["items"]) == 2
    assert (await client.get(f"/v1/concerns/{cid}", headers=staff)).status_code == 200

    rows = await audit_rows(sessionmaker)
    assert summary(rows) == [
        ("POST", "/v1/registrations", "p1", "vestbjerg", "registration", 201),
        ("POST", "/v1/registrations/batch", "p1", "vestbjerg", "registration", 200),
        ("POST", "/v1/registrations/batch", "p2", "vestbjerg", "registration", 200),
        ("POST", "/v1/registrations/retractions", "p2", "vestbjerg", "registration", 201),
        ("GET", "/v1/pupils/{pupil_id}/registrations", "p1", "vestbjerg", "follow-up", 200),
        ("GET", "/v1/pupils/{pupil_id}/concerns", "p1", "vestbjerg", "follow-up", 200),
        ("GET", "/v1/schools/{school_id}/concerns", "p1", "vestbjerg", "follow-up", 200),
        ("GET", "/v1/schools/{school_id}/concerns", "p2", "vestbjerg", "follow-up", 200),
        ("GET", "/v1/concerns/{concern_id}", "p1", "vestbjerg", "follow-up", 200),
    ]
    first = rows[0]
    assert (first.subject, first.role, first.municipality, first.client) == (
        "sis-vestbjerg",
        "school_system",
        "aalborg",
        "skoleintra",
    )
    assert {r.subject for r in rows[4:]} == {"laerer-1"}


async def test_refused_requests_leave_no_row_and_an_unknown_purpose_names_the_header(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    await client.post("/v1/registrations", json=registration("p1", MONDAY))
    before = len(await audit_rows(sessionmaker))
    r = await client.get("/v1/pupils/p1/registrations", headers={"X-Purpose": "curiosity"})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["header.X-Purpose"]
    weekend = registration("p1", MONDAY - timedelta(days=1))
    assert (await client.post("/v1/registrations", json=weekend)).status_code == 422
    assert (await client.get("/v1/pupils/nobody/registrations")).status_code == 404
    assert len(await audit_rows(sessionmaker)) == before


async def test_a_5000_item_batch_writes_one_row_per_pupil(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    days = school_days(MONDAY, 2)
    items = [registration(f"p{i}", d) for i in range(2500) for d in days]
    r = await client.post("/v1/registrations/batch", json={"items": items})
    assert r.status_code == 200 and r.json()["inserted"] == 5000
    async with sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(AuditEntry))
        pupils = await session.scalar(select(func.count(func.distinct(AuditEntry.pupil_id))))
    assert count == pupils == 2500


async def test_the_access_log_lists_a_pupils_accesses_for_its_municipality_only(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    await client.post("/v1/registrations", json=registration("p1", MONDAY))
    staff = bearer(Role.SCHOOL_STAFF, subject="laerer-1")
    for purpose in ("follow-up", "referral", "support"):
        headers = staff | {"X-Purpose": purpose}
        assert (await client.get("/v1/pupils/p1/registrations", headers=headers)).is_success
    admin = bearer(Role.MUNICIPALITY_ADMIN, subject="admin-1")
    r = await client.get("/v1/pupils/p1/access-log?limit=2", headers=admin)
    assert r.status_code == 200
    first = r.json()
    assert [e["purpose"] for e in first["items"]] == ["support", "referral"]
    assert first["items"][0]["subject"] == "laerer-1"
    assert first["items"][0]["endpoint"] == "/v1/pupils/{pupil_id}/registrations"
    cursor = first["next_cursor"]
    r = await client.get(f"/v1/pupils/p1/access-log?limit=2&cursor={cursor}", headers=admin)
    second = r.json()
    assert [e["purpose"] for e in second["items"]] == ["follow-up", "registration"]
    assert second["next_cursor"] is None
    # Reading the log is itself logged.
    rows = await audit_rows(sessionmaker)
    assert summary(rows[-1:]) == [
        ("GET", "/v1/pupils/{pupil_id}/access-log", "p1", None, "access-request", 200)
    ]
    assert rows[-1].subject == "admin-1"
    # Another municipality's administrator does not learn that the pupil exists.
    odense = bearer(Role.MUNICIPALITY_ADMIN, "odense")
    assert (await client.get("/v1/pupils/p1/access-log", headers=odense)).status_code == 404
    bad = await client.get("/v1/pupils/p1/access-log?cursor=zzz", headers=admin)
    assert bad.status_code == 422


async def test_the_application_cannot_change_or_remove_audit_rows(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    await client.post("/v1/registrations", json=registration("p1", MONDAY))
    for statement in (
        "update audit_log set pupil_id = 'someone-else'",
        "delete from audit_log",
        "truncate audit_log",
    ):
        async with sessionmaker() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                async with session.begin():
                    await session.execute(text(statement))
    rows = await audit_rows(sessionmaker)
    assert [(r.pupil_id, r.endpoint) for r in rows] == [("p1", "/v1/registrations")]


async def test_replica_mode_is_what_lets_the_test_fixture_empty_the_audit_log(
    clean_db: AsyncEngine,
) -> None:
    """The clean_db fixture relies on this; without replica mode the truncate is refused."""
    row = {
        "subject": "s",
        "role": "school_staff",
        "pupil_id": "p1",
        "method": "GET",
        "endpoint": "/x",
        "purpose": "support",
        "status": 200,
    }
    async with clean_db.begin() as conn:
        await conn.execute(insert(AuditEntry).values(row))
    with pytest.raises(DBAPIError, match="append-only"):
        async with clean_db.begin() as conn:
            await conn.execute(text("truncate audit_log"))
    async with clean_db.begin() as conn:
        await conn.execute(text("set local session_replication_role = replica"))
        await conn.execute(text("truncate audit_log"))
    async with clean_db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(AuditEntry)) == 0
        # The setting was local to that transaction: the trigger guards again.
        assert await conn.scalar(text("show session_replication_role")) == "origin"


async def test_audit_rows_share_the_fate_of_the_request(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A batch refused half-way (a reused event id) stores neither registrations nor rows."""
    await configure(client)
    first = registration("p1", MONDAY)
    assert (await client.post("/v1/registrations", json=first)).status_code == 201
    clash = first | {"category": "illness"}
    r = await client.post(
        "/v1/registrations/batch", json={"items": [registration("p2", MONDAY), clash]}
    )
    assert r.status_code == 409
    async with sessionmaker() as session:
        events = await session.scalar(select(func.count()).select_from(RegistrationEvent))
    assert events == 1
    assert [r.pupil_id for r in await audit_rows(sessionmaker)] == ["p1"]
