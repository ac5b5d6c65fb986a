"""The reports API (DOMAIN.md section 8) on a small Danish calendar, against hand-computed
figures: registrations and enrolments go in through the API, the read model of concerns is fed
as the concern consumer would, and every figure below was worked out by hand from them."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.concerns.repository import ConcernRepository
from opspor_api.models import AuditEntry, Case
from opspor_shared.auth import Role
from tests.api.test_concerns import concern_event
from tests.auth import bearer
from tests.support import SCHOOL_YEAR, YEAR_BODY, configure, registration

STAFF = bearer(Role.SCHOOL_STAFF, schools=["vestbjerg"])
HALS_STAFF = bearer(Role.SCHOOL_STAFF, schools=["hals"])
ADMIN = bearer(Role.MUNICIPALITY_ADMIN)
ODENSE_ADMIN = bearer(Role.MUNICIPALITY_ADMIN, "odense")
SYSTEM = bearer(Role.SCHOOL_SYSTEM, schools=["vestbjerg", "hals"])
PERIOD = {"from": "2026-09-07", "to": "2026-09-18"}  # two weeks: 10 school days


def d(text: str) -> date:
    return date.fromisoformat(text)


def weekdays(first: str, last: str) -> list[date]:
    out, day = [], d(first)
    while day <= d(last):
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


async def add_school(client: httpx.AsyncClient, school: str) -> None:
    body = {
        "municipality_id": "aalborg",
        "name": f"{school.title()} Skole",
        "timezone": "Europe/Copenhagen",
        "mailbox": f"{school}@sikkerpost.aalborg.dk",
    }
    assert (await client.put(f"/v1/schools/{school}", json=body, headers=ADMIN)).status_code == 201
    r = await client.put(
        f"/v1/schools/{school}/school-years/{SCHOOL_YEAR}", json=YEAR_BODY, headers=ADMIN
    )
    assert r.status_code == 201, r.text


async def enrol(
    client: httpx.AsyncClient,
    pupil: str,
    first: str,
    until: str | None = None,
    grade: int | None = None,
    class_name: str | None = None,
    school: str = "vestbjerg",
) -> None:
    body: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "enrolled_from": first,
        "enrolled_until": until,
        "recorded_at": "2026-08-01T08:00:00+02:00",
        "grade": grade,
        "class_name": class_name,
    }
    r = await client.put(f"/v1/schools/{school}/enrolments/{pupil}", json=body, headers=SYSTEM)
    assert r.status_code == 200, r.text
    assert (r.json()["grade"], r.json()["class_name"]) == (grade, class_name)


async def post(client: httpx.AsyncClient, items: list[dict[str, Any]]) -> None:
    r = await client.post("/v1/registrations/batch", json={"items": items}, headers=SYSTEM)
    assert r.status_code == 200, r.text


async def seed_absence(client: httpx.AsyncClient) -> None:
    """p1 4A all period; p2 4B from 14 Sep; p3 7A until 10 Sep; p4 no enrolment; hals: p5."""
    await configure(client)
    await add_school(client, "hals")
    await enrol(client, "p1", "2026-08-10", grade=4, class_name="4A")
    await enrol(client, "p2", "2026-09-14", grade=4, class_name="4B")
    await enrol(client, "p3", "2026-08-10", "2026-09-10", grade=7, class_name="7A")
    await enrol(client, "p5", "2026-08-10", grade=0, class_name="0A", school="hals")
    r = registration
    await post(
        client,
        [
            r("p1", d("2026-09-07"), category="illness"),
            # am + pm + a lesson: c(d) is capped at 1.
            r("p1", d("2026-09-08"), extent="0.5", slot="am"),
            r("p1", d("2026-09-08"), extent="0.5", slot="pm"),
            r("p1", d("2026-09-08"), extent="0.125", slot="3"),
            r("p1", d("2026-09-09"), category="authorized", extent="0.5", slot="am"),
            r("p1", d("2026-09-09"), category="illness", extent="0.25", slot="2"),
            r("p2", d("2026-09-08")),  # before p2's enrolment: not counted
            r("p2", d("2026-09-15")),
            r("p3", d("2026-09-10"), category="illness", extent="0.5", slot="am"),
            r("p3", d("2026-09-11"), category="illness"),  # after p3 left: not counted
            r("p4", d("2026-09-16"), category="authorized"),
        ],
    )


def row_of(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def figures(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["pupils"],
        row["pupil_days"],
        row["illness_share"],
        row["authorized_share"],
        row["unauthorized_share"],
    )


async def test_absence_shares_per_class_grade_school_and_municipality(
    client: httpx.AsyncClient,
) -> None:
    await seed_absence(client)
    r = await client.get("/v1/schools/vestbjerg/reports/absence", params=PERIOD, headers=STAFF)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [(x["scope"], x["grade"], x["class_name"]) for x in rows] == [
        ("class", 4, "4A"),
        ("class", 4, "4B"),
        ("class", 7, "7A"),
        ("class", None, None),
        ("grade", 4, None),
        ("grade", 7, None),
        ("grade", None, None),
        ("school", None, None),
    ]
    # p1: illness 1 + 0.25, authorized 0.5, unauthorized min(1, 1.125) over 10 days.
    assert figures(row_of(rows, scope="class", class_name="4A")) == (
        1,
        10,
        "0.1250",
        "0.0500",
        "0.1000",
    )
    assert row_of(rows, scope="class", class_name="4A")["unauthorized_days"] == "1.0000"
    # p2: enrolled 14 Sep, 5 days; the 8 Sep registration lies before the stay.
    assert figures(row_of(rows, scope="class", class_name="4B")) == (
        1,
        5,
        "0.0000",
        "0.0000",
        "0.2000",
    )
    # p3: left 10 Sep, 4 days; the 11 Sep registration lies after the stay.
    assert figures(row_of(rows, scope="class", class_name="7A")) == (
        1,
        4,
        "0.1250",
        "0.0000",
        "0.0000",
    )
    # p4 has no enrolment: counted for the whole period with unknown grade and class.
    assert figures(row_of(rows, scope="class", grade=None)) == (1, 10, "0.0000", "0.1000", "0.0000")
    assert figures(row_of(rows, scope="grade", grade=4)) == (2, 15, "0.0833", "0.0333", "0.1333")
    # 1.75 / 29, 1.5 / 29, 2 / 29.
    assert figures(row_of(rows, scope="school")) == (4, 29, "0.0603", "0.0517", "0.0690")

    # Over the autumn break (12-16 Oct) only the school's 10 school days count; p3 has left,
    # p4 (no enrolment) has no registration in the period and so is no pupil of it.
    autumn = {"from": "2026-10-05", "to": "2026-10-23"}
    r = await client.get("/v1/schools/vestbjerg/reports/absence", params=autumn, headers=STAFF)
    assert figures(row_of(r.json()["rows"], scope="school")) == (
        2,
        20,
        "0.0000",
        "0.0000",
        "0.0000",
    )

    r = await client.get("/v1/municipalities/aalborg/reports/absence", params=PERIOD, headers=ADMIN)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [(x["scope"], x["school_id"]) for x in rows] == [
        ("school", "hals"),
        ("school", "vestbjerg"),
        ("municipality", None),
    ]
    assert figures(rows[0]) == (1, 10, "0.0000", "0.0000", "0.0000")
    assert figures(rows[2]) == (5, 39, "0.0449", "0.0385", "0.0513")


async def test_weekday_and_month_patterns(client: httpx.AsyncClient) -> None:
    await seed_absence(client)
    r = await client.get("/v1/schools/vestbjerg/reports/patterns", params=PERIOD, headers=STAFF)
    assert r.status_code == 200, r.text
    rows = {(x["kind"], x["key"]): x for x in r.json()["rows"]}
    assert list(rows) == [("weekday", str(n)) for n in range(1, 6)] + [("month", "2026-09")]

    def shares(key: tuple[str, str]) -> tuple[Any, ...]:
        x = rows[key]
        return (
            x["pupil_days"],
            x["illness_share"],
            x["authorized_share"],
            x["unauthorized_share"],
            x["total_share"],
        )

    # Pupils present per day: Mon-Thu 3 + 3; Friday 11 Sep p3 has left: 2 + 3.
    assert shares(("weekday", "1")) == (6, "0.1667", "0.0000", "0.0000", "0.1667")
    assert shares(("weekday", "2")) == (6, "0.0000", "0.0000", "0.3333", "0.3333")
    assert shares(("weekday", "3")) == (6, "0.0417", "0.2500", "0.0000", "0.2917")
    assert shares(("weekday", "4")) == (6, "0.0833", "0.0000", "0.0000", "0.0833")
    assert shares(("weekday", "5")) == (5, "0.0000", "0.0000", "0.0000", "0.0000")
    assert shares(("month", "2026-09")) == (29, "0.0603", "0.0517", "0.0690", "0.1810")


# Two weeks over a month's end: Mon 28 Sep - Fri 9 Oct, 3 school days in September, 7 in October.
TWO_MONTHS = {"from": "2026-09-28", "to": "2026-10-09"}


async def seed_patterns(client: httpx.AsyncClient) -> None:
    """vestbjerg: v1 and v2 the whole period, v3 until Fri 2 Oct; hals: h1 only."""
    await configure(client)
    await add_school(client, "hals")
    await enrol(client, "v1", "2026-08-10", grade=3, class_name="3A")
    await enrol(client, "v2", "2026-08-10", grade=3, class_name="3A")
    await enrol(client, "v3", "2026-08-10", "2026-10-02", grade=5, class_name="5A")
    await enrol(client, "h1", "2026-08-10", grade=1, class_name="1A", school="hals")
    r = registration
    await post(
        client,
        [
            r("v1", d("2026-09-28"), category="illness"),  # Mon, September
            r("v3", d("2026-09-29")),  # Tue, September
            r("v1", d("2026-10-07"), category="authorized", extent="0.5", slot="am"),  # Wed
            r("v2", d("2026-10-09")),  # Fri
            r("v3", d("2026-10-06"), category="illness"),  # after v3 left: not counted
            r("h1", d("2026-09-28"), school="hals"),  # Mon, September
            r("h1", d("2026-10-02"), category="illness", extent="0.5", slot="am", school="hals"),
            # Mon 5 Oct: am + pm + a lesson, c(d) capped at 1.
            r("h1", d("2026-10-05"), extent="0.5", slot="am", school="hals"),
            r("h1", d("2026-10-05"), extent="0.5", slot="pm", school="hals"),
            r("h1", d("2026-10-05"), extent="0.125", slot="3", school="hals"),
        ],
    )


def pattern_figures(rows: list[dict[str, Any]], school: str | None, kind: str, key: str) -> Any:
    x = row_of(rows, school_id=school, kind=kind, key=key)
    return (
        x["pupil_days"],
        x["illness_share"],
        x["authorized_share"],
        x["unauthorized_share"],
        x["total_share"],
    )


async def test_municipality_patterns_pool_the_schools_pupil_days(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed_patterns(client)
    url = "/v1/municipalities/aalborg/reports/patterns"
    r = await client.get(url, params=TWO_MONTHS, headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["municipality_id"], body["period_from"], body["period_to"]) == (
        "aalborg",
        "2026-09-28",
        "2026-10-09",
    )
    rows = body["rows"]
    buckets = [("weekday", str(n)) for n in range(1, 6)] + [
        ("month", "2026-09"),
        ("month", "2026-10"),
    ]
    # Each school's rows, then the municipality's (school null), weekdays before months.
    assert [(x["school_id"], x["kind"], x["key"]) for x in rows] == [
        (s, kind, key) for s in ("hals", "vestbjerg", None) for kind, key in buckets
    ]
    assert list(rows[0]) == [
        "school_id",
        "kind",
        "key",
        "pupil_days",
        "illness_share",
        "authorized_share",
        "unauthorized_share",
        "total_share",
    ]

    # hals, one pupil: 2 of each weekday; Mon 28 Sep and Mon 5 Oct unauthorized (the second
    # capped at 1), Fri 2 Oct half a day of illness.
    assert pattern_figures(rows, "hals", "weekday", "1") == (
        2,
        "0.0000",
        "0.0000",
        "1.0000",
        "1.0000",
    )
    assert pattern_figures(rows, "hals", "month", "2026-10") == (
        7,
        "0.0714",
        "0.0000",
        "0.1429",
        "0.2143",
    )
    # vestbjerg: Mondays 28 Sep (v1, v2, v3) and 5 Oct (v1, v2) are 5 pupil days, one of
    # illness; September 3 days x 3 pupils, October 2 x 3 + 5 x 2.
    assert pattern_figures(rows, "vestbjerg", "weekday", "1") == (
        5,
        "0.2000",
        "0.0000",
        "0.0000",
        "0.2000",
    )
    assert pattern_figures(rows, "vestbjerg", "month", "2026-09") == (
        9,
        "0.1111",
        "0.0000",
        "0.1111",
        "0.2222",
    )
    assert pattern_figures(rows, "vestbjerg", "month", "2026-10") == (
        16,
        "0.0000",
        "0.0312",
        "0.0625",
        "0.0938",
    )

    # The municipality: the sums of c(d) over both schools' pupil days divided by those days
    # (Monday 3 / 7 = 0.4286, where the mean of the schools' shares would be 0.6).
    expected = {
        ("weekday", "1"): (7, "0.1429", "0.0000", "0.2857", "0.4286"),  # 1, 0, 2 of 7
        ("weekday", "2"): (7, "0.0000", "0.0000", "0.1429", "0.1429"),  # v3's 29 Sep
        ("weekday", "3"): (7, "0.0000", "0.0714", "0.0000", "0.0714"),  # v1's half day
        ("weekday", "4"): (7, "0.0000", "0.0000", "0.0000", "0.0000"),
        ("weekday", "5"): (7, "0.0714", "0.0000", "0.1429", "0.2143"),  # h1 0.5, v2 1
        ("month", "2026-09"): (12, "0.0833", "0.0000", "0.1667", "0.2500"),  # 1, 0, 2 of 9 + 3
        ("month", "2026-10"): (23, "0.0217", "0.0217", "0.0870", "0.1304"),  # .5, .5, 2 of 16 + 7
    }
    assert {b: pattern_figures(rows, None, *b) for b in expected} == expected

    # The CSV: the same rows, one a line, school null as an empty cell.
    r = await client.get(url, params=TWO_MONTHS, headers=ADMIN | {"Accept": "text/csv"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="patterns-aalborg.csv"'
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == list(rows[0]) and len(table) == 1 + 3 * 7
    assert table[-1] == ["", "month", "2026-10", "23", "0.0217", "0.0217", "0.0870", "0.1304"]
    # An aggregate names no pupil and writes no audit row, as the other roll-ups.
    assert "v1" not in r.text and "h1" not in r.text
    assert (
        await audited(sessionmaker, "/v1/municipalities/{municipality_id}/reports/patterns") == []
    )

    # The school route agrees with the school's rows of the roll-up.
    r = await client.get("/v1/schools/vestbjerg/reports/patterns", params=TWO_MONTHS, headers=STAFF)
    own = [x | {"school_id": "vestbjerg"} for x in r.json()["rows"]]
    assert own == [x for x in rows if x["school_id"] == "vestbjerg"]


async def test_municipality_patterns_are_for_its_own_administrator_with_checked_parameters(
    client: httpx.AsyncClient,
) -> None:
    await seed_patterns(client)
    url = "/v1/municipalities/aalborg/reports/patterns"
    # School staff read their school's patterns, not the roll-up; another municipality's
    # administrator gets the 404 of a municipality that does not exist.
    r = await client.get(url, params=TWO_MONTHS, headers=STAFF)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    r = await client.get(url, params=TWO_MONTHS, headers=ODENSE_ADMIN)
    assert r.status_code == 404, r.text
    unknown = await client.get(
        "/v1/municipalities/nowhere/reports/patterns", params=TWO_MONTHS, headers=ODENSE_ADMIN
    )
    assert r.json()["detail"].replace("aalborg", "X") == unknown.json()["detail"].replace(
        "nowhere", "X"
    )
    assert "hals" not in r.text and "vestbjerg" not in r.text

    r = await client.get(url, params={"from": "2026-10-09", "to": "2026-09-28"}, headers=ADMIN)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in r.json()["errors"]} == {"query.from", "query.to"}
    r = await client.get(url, params={"from": "2026-02-30", "to": "2026-10-09"}, headers=ADMIN)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["query.from"]
    r = await client.get(url, params={"from": "2026-09-28"}, headers=ADMIN)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["query.to"]
    r = await client.get(url, params={"from": "2024-01-01", "to": "2026-10-09"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.to"


async def add_concerns(
    sessionmaker: async_sessionmaker[AsyncSession], items: list[tuple[str, str, int]]
) -> None:
    rows = []
    for n, (pupil, level, revision) in enumerate(items):
        event = concern_event(pupil, d("2026-09-07") + timedelta(days=n), level=level)
        data = event.data
        rows.append(
            {
                "concern_id": uuid.UUID(data["concern_id"]),
                "revision": revision,
                "status": "active" if revision % 2 else "withdrawn",
                "pupil_id": pupil,
                "school_id": "vestbjerg",
                "municipality_id": "aalborg",
                "level": level,
                "crossing_date": d(data["crossing_date"]),
                "pack_id": "dk-aalborg-2018",
                "rule_id": f"rule-{n}",
                "rule_version": "1",
                "explanation": data["explanation"],
            }
        )
    async with sessionmaker() as session, session.begin():
        await ConcernRepository(session).apply(rows)


async def audited(
    sessionmaker: async_sessionmaker[AsyncSession], endpoint: str
) -> list[tuple[str, str | None]]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.endpoint == endpoint).order_by(AuditEntry.id)
        )
        return [(a.pupil_id, a.school_id) for a in rows]


async def test_open_concerns_by_level_are_audited_and_rolled_up(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed_absence(client)
    await add_concerns(
        sessionmaker,
        [("p1", "concern", 1), ("p1", "concern", 1), ("p2", "ppr-may", 1), ("p4", "concern", 2)],
    )
    r = await client.get("/v1/schools/vestbjerg/reports/open-concerns", headers=STAFF)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(c["level"], c["pupils"]) for c in body["counts"]] == [("concern", 1), ("ppr-may", 1)]
    # p4's concern is withdrawn: not open.
    assert [
        (p["level"], p["pupil_id"], p["grade"], p["class_name"], p["concerns"])
        for p in body["pupils"]
    ] == [("concern", "p1", 4, "4A", 2), ("ppr-may", "p2", 4, "4B", 1)]
    assert await audited(sessionmaker, "/v1/schools/{school_id}/reports/open-concerns") == [
        ("p1", "vestbjerg"),
        ("p2", "vestbjerg"),
    ]
    r = await client.get("/v1/municipalities/aalborg/reports/open-concerns", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert [(c["school_id"], c["level"], c["pupils"]) for c in r.json()["counts"]] == [
        ("vestbjerg", "concern", 1),
        ("vestbjerg", "ppr-may", 1),
        (None, "concern", 1),
        (None, "ppr-may", 1),
    ]
    assert "p1" not in r.text  # the roll-up names no pupil


async def test_close_to_a_limit_uses_the_engine_on_the_next_school_days(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)  # dk-aalborg-2018
    await enrol(client, "c1", "2026-08-10", grade=5, class_name="5A")
    await enrol(client, "c4", "2026-08-10", grade=5, class_name="5A")  # no absence at all
    reg = registration
    illness = ["2026-08-17", "2026-08-24", "2026-08-31", "2026-09-01", "2026-09-07"]
    illness += ["2026-09-14", "2026-09-15", "2026-09-21"]
    await post(
        client,
        [reg("c1", x) for x in weekdays("2026-09-22", "2026-09-25")]  # 4 in a row
        + [reg("c2", x) for x in weekdays("2026-09-23", "2026-09-25")]  # 3 in a row
        + [reg("c3", d(x), category="illness") for x in illness]  # 8 in the school year
        + [reg("c5", x) for x in weekdays("2026-09-21", "2026-09-25")],  # 5 in a row: met
    )
    # Saturday: the horizon is Friday 25 September; the next school days 28 and 29 September.
    r = await client.get(
        "/v1/schools/vestbjerg/reports/close-to-limit",
        params={"date": "2026-09-26"},
        headers=STAFF,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["horizon"] == "2026-09-25"
    got = [
        (x["pupil_id"], x["rule_id"], x["level"], x["more_days"], x["crossing_date"], x["grade"])
        for x in body["rows"]
    ]
    assert got == [
        ("c1", "consecutive-5", "concern", 1, "2026-09-28", 5),
        ("c2", "consecutive-5", "concern", 2, "2026-09-29", None),
        ("c3", "count-10-school-year", "ppr-may", 2, "2026-09-29", None),
        # Already over consecutive-5 (no new crossing there), but 7 of 20 is two days away.
        ("c5", "count-7-of-20", "concern", 2, "2026-09-29", None),
    ]
    assert body["pupils"] == 4
    assert body["rows"][0]["rule"].startswith("5 consecutive absence days")
    assert await audited(sessionmaker, "/v1/schools/{school_id}/reports/close-to-limit") == [
        (p, "vestbjerg") for p in ("c1", "c2", "c3", "c5")
    ]


async def seed_baerum(client: httpx.AsyncClient) -> None:
    await configure(client)
    await add_school(client, "hals")
    # The last 20 school days up to Friday 30 October, around the autumn break: 28 Sep - 30 Oct.
    window = [
        x
        for x in weekdays("2026-09-28", "2026-10-30")
        if not d("2026-10-12") <= x <= d("2026-10-16")
    ]
    assert len(window) == 20
    await enrol(client, "b1", "2026-08-10", grade=2, class_name="2A")
    await enrol(client, "b2", "2026-08-10", grade=5, class_name="5A")
    await enrol(client, "b3", "2026-08-10", grade=8, class_name="8A")
    await enrol(client, "b4", "2026-10-05", grade=8, class_name="8A")
    await enrol(client, "b6", "2026-08-10", grade=9, class_name="9A", school="hals")
    r = registration
    await post(
        client,
        [r("b1", x) for x in window]
        + [r("b2", x, category="illness") for x in window[1:]]  # 19 of 20
        + [r("b3", x, category="illness", extent="0.5", slot="am") for x in window]
        + [r("b4", x) for x in window if x >= d("2026-10-05")]  # only 15 days there
        + [r("b5", d("2026-10-01"), category="authorized")],  # no enrolment: unknown level
    )


async def test_the_baerum_table_counts_completely_absent_pupils_per_school_level(
    client: httpx.AsyncClient,
) -> None:
    await seed_baerum(client)
    r = await client.get(
        "/v1/schools/vestbjerg/reports/baerum", params={"date": "2026-10-31"}, headers=STAFF
    )
    assert r.status_code == 200, r.text
    assert [(x["school_level"], x["pupils"], x["completely_absent"]) for x in r.json()["rows"]] == [
        ("indskoling", 1, 1),
        ("mellemtrin", 1, 0),
        ("udskoling", 2, 1),
        ("unknown", 1, 0),
    ]
    r = await client.get(
        "/v1/municipalities/aalborg/reports/baerum", params={"date": "2026-10-31"}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    table = [
        (x["school_id"], x["school_level"], x["pupils"], x["completely_absent"])
        for x in r.json()["rows"]
    ]
    assert table == [
        ("hals", "indskoling", 0, 0),
        ("hals", "mellemtrin", 0, 0),
        ("hals", "udskoling", 1, 0),
        ("vestbjerg", "indskoling", 1, 1),
        ("vestbjerg", "mellemtrin", 1, 0),
        ("vestbjerg", "udskoling", 2, 1),
        ("vestbjerg", "unknown", 1, 0),
        (None, "indskoling", 1, 1),
        (None, "mellemtrin", 1, 0),
        (None, "udskoling", 3, 1),
        (None, "unknown", 1, 0),
    ]
    assert {x["consulted"] + x["referred"] + x["ppr_total"] for x in r.json()["rows"]} == {0}


async def case_with(
    client: httpx.AsyncClient, pupil: str, entries: list[dict[str, Any]], school: str = "vestbjerg"
) -> str:
    """A case opened by hand for the pupil, with the entries recorded through the API."""
    staff = bearer(Role.SCHOOL_STAFF, schools=[school])
    r = await client.post(
        f"/v1/schools/{school}/cases", json={"pupil_id": pupil, "source": "team"}, headers=staff
    )
    assert r.status_code == 201, r.text
    case = r.json()
    for entry in entries:
        r = await client.post(
            f"/v1/cases/{case['id']}/entries",
            json=entry,
            headers=staff | {"If-Match": f'"{case["version"]}"'},
        )
        assert r.status_code == 201, r.text
        case = r.json()
    return str(case["id"])


def referral(to: str, kind: str, on: str) -> dict[str, Any]:
    return {"kind": "referral", "to": to, "type": kind, "on": on}


async def test_the_baerum_table_counts_pupils_consulted_with_and_referred_to_ppr(
    client: httpx.AsyncClient,
) -> None:
    await seed_baerum(client)
    await case_with(client, "b1", [referral("ppr", "consulted", "2026-10-01")])
    # Consulted first, then referred: counted once, as referred.
    await case_with(
        client,
        "b3",
        [referral("ppr", "consulted", "2026-09-10"), referral("ppr", "referred", "2026-10-20")],
    )
    # Referred to the GP, not to PPR; and a PPR referral after the report date.
    await case_with(client, "b2", [referral("gp", "referred", "2026-10-01")])
    await case_with(client, "b4", [referral("ppr", "referred", "2026-11-02")])
    await case_with(client, "b6", [referral("ppr", "referred", "2026-10-02")], school="hals")
    r = await client.get(
        "/v1/municipalities/aalborg/reports/baerum", params={"date": "2026-10-31"}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    table = [
        (x["school_id"], x["school_level"], x["consulted"], x["referred"], x["ppr_total"])
        for x in r.json()["rows"]
    ]
    assert table == [
        ("hals", "indskoling", 0, 0, 0),
        ("hals", "mellemtrin", 0, 0, 0),
        ("hals", "udskoling", 0, 1, 1),
        ("vestbjerg", "indskoling", 1, 0, 1),
        ("vestbjerg", "mellemtrin", 0, 0, 0),
        ("vestbjerg", "udskoling", 0, 1, 1),
        ("vestbjerg", "unknown", 0, 0, 0),
        (None, "indskoling", 1, 0, 1),
        (None, "mellemtrin", 0, 0, 0),
        (None, "udskoling", 0, 2, 2),
        (None, "unknown", 0, 0, 0),
    ]
    r = await client.get(
        "/v1/schools/vestbjerg/reports/baerum",
        params={"date": "2026-11-06"},
        headers=STAFF | {"Accept": "text/csv"},
    )
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][-3:] == ["consulted", "referred", "ppr_total"]
    # A week later b4's referral of 2 November counts too.
    assert rows[3][:2] + rows[3][-3:] == ["vestbjerg", "udskoling", "0", "2", "2"]


async def test_open_cases_per_phase_coordinator_and_overdue_reason(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed_baerum(client)
    first = await case_with(client, "b1", [{"kind": "assignment", "coordinator": "teacher-1"}])
    await case_with(client, "b2", [{"kind": "assignment", "coordinator": "teacher-1"}])
    await case_with(client, "b6", [], school="hals")
    async with sessionmaker() as session, session.begin():
        case = await session.get(Case, uuid.UUID(first))
        assert case is not None
        case.overdue_reasons = ["evaluation-overdue", "ppr-referral-missing"]
    r = await client.get("/v1/schools/vestbjerg/reports/cases", headers=STAFF)
    assert r.status_code == 200, r.text
    assert [
        (x["school_id"], x["dimension"], x["key"], x["open_cases"], x["overdue_cases"])
        for x in r.json()["rows"]
    ] == [
        ("vestbjerg", "phase", "class-team", 2, 1),
        ("vestbjerg", "coordinator", "teacher-1", 2, 1),
        ("vestbjerg", "overdue-reason", "evaluation-overdue", 1, 1),
        ("vestbjerg", "overdue-reason", "ppr-referral-missing", 1, 1),
    ]
    r = await client.get("/v1/municipalities/aalborg/reports/cases", headers=ADMIN)
    assert r.status_code == 200, r.text
    rolled = [
        (x["dimension"], x["key"], x["open_cases"])
        for x in r.json()["rows"]
        if x["school_id"] is None
    ]
    assert rolled == [
        ("phase", "class-team", 3),
        ("coordinator", "none", 1),
        ("coordinator", "teacher-1", 2),
        ("overdue-reason", "evaluation-overdue", 1),
        ("overdue-reason", "ppr-referral-missing", 1),
    ]
    # Another municipality's administrator and a school's staff elsewhere: not theirs.
    other = bearer(Role.MUNICIPALITY_ADMIN, municipality="odense")
    assert (
        await client.get("/v1/municipalities/aalborg/reports/cases", headers=other)
    ).status_code in (403, 404)
    hals = bearer(Role.SCHOOL_STAFF, schools=["hals"])
    assert (
        await client.get("/v1/schools/vestbjerg/reports/cases", headers=hals)
    ).status_code == 404


async def test_every_report_exports_the_same_rows_as_csv(client: httpx.AsyncClient) -> None:
    await seed_absence(client)
    await case_with(client, "p1", [{"kind": "assignment", "coordinator": "teacher-1"}])
    csv_accept = {"Accept": "text/csv"}
    for url, params, key, headers in (
        ("/v1/schools/vestbjerg/reports/absence", PERIOD, "rows", STAFF),
        ("/v1/municipalities/aalborg/reports/absence", PERIOD, "rows", ADMIN),
        ("/v1/schools/vestbjerg/reports/patterns", PERIOD, "rows", STAFF),
        ("/v1/municipalities/aalborg/reports/patterns", PERIOD, "rows", ADMIN),
        ("/v1/schools/vestbjerg/reports/open-concerns", {}, "pupils", STAFF),
        ("/v1/municipalities/aalborg/reports/open-concerns", {}, "counts", ADMIN),
        ("/v1/schools/vestbjerg/reports/close-to-limit", {"date": "2026-09-18"}, "rows", STAFF),
        ("/v1/schools/vestbjerg/reports/baerum", {"date": "2026-09-18"}, "rows", STAFF),
        ("/v1/municipalities/aalborg/reports/baerum", {"date": "2026-09-18"}, "rows", ADMIN),
        ("/v1/schools/vestbjerg/reports/cases", {}, "rows", STAFF),
        ("/v1/municipalities/aalborg/reports/cases", {}, "rows", ADMIN),
    ):
        as_json = await client.get(url, params=params, headers=headers)
        as_csv = await client.get(url, params=params, headers=headers | csv_accept)
        assert as_json.status_code == as_csv.status_code == 200, (url, as_csv.text)
        assert as_csv.headers["content-type"].startswith("text/csv"), url
        assert "attachment" in as_csv.headers["content-disposition"]
        table = list(csv.reader(io.StringIO(as_csv.text)))
        items = as_json.json()[key]
        if items:
            assert table[0] == list(items[0]), url
        expected = [["" if v is None else str(v) for v in item.values()] for item in items]
        assert table[1:] == expected, url
    # Spot check: the school row of the absence CSV carries the shares as decimals.
    r = await client.get(
        "/v1/schools/vestbjerg/reports/absence", params=PERIOD, headers=STAFF | csv_accept
    )
    school = [line for line in csv.DictReader(io.StringIO(r.text)) if line["scope"] == "school"]
    assert Decimal(school[0]["unauthorized_share"]) == Decimal("0.0690")

    # A class name a spreadsheet would run as a formula is exported as text.
    await enrol(client, "p6", "2026-08-10", grade=4, class_name="=HYPERLINK(1)")
    r = await client.get(
        "/v1/schools/vestbjerg/reports/absence", params=PERIOD, headers=STAFF | csv_accept
    )
    assert "'=HYPERLINK(1)" in r.text and ",=HYPERLINK" not in r.text


async def test_other_tenants_get_404_and_bad_parameters_name_every_field(
    client: httpx.AsyncClient,
) -> None:
    await seed_absence(client)
    # hals' staff, and another municipality's administrator, do not see vestbjerg at all.
    for url in (
        "/v1/schools/vestbjerg/reports/absence",
        "/v1/schools/vestbjerg/reports/patterns",
        "/v1/schools/vestbjerg/reports/baerum",
    ):
        for headers in (HALS_STAFF, ODENSE_ADMIN):
            r = await client.get(url, params=PERIOD, headers=headers)
            assert r.status_code == 404, (url, r.text)
            unknown = await client.get(
                url.replace("vestbjerg", "nowhere"), params=PERIOD, headers=headers
            )
            assert r.json()["detail"].replace("vestbjerg", "X") == unknown.json()["detail"].replace(
                "nowhere", "X"
            )
    for url in (
        "/v1/schools/vestbjerg/reports/open-concerns",
        "/v1/schools/vestbjerg/reports/close-to-limit",
    ):
        assert (await client.get(url, headers=HALS_STAFF)).status_code == 404
    for url in (
        "/v1/municipalities/aalborg/reports/absence",
        "/v1/municipalities/aalborg/reports/patterns",
        "/v1/municipalities/aalborg/reports/open-concerns",
        "/v1/municipalities/aalborg/reports/baerum",
    ):
        r = await client.get(url, params=PERIOD, headers=ODENSE_ADMIN)
        assert r.status_code == 404, url
    unknown = await client.get("/v1/schools/nowhere/reports/absence", params=PERIOD, headers=ADMIN)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"

    backwards = {"from": "2026-09-18", "to": "2026-09-07"}
    for url in (
        "/v1/schools/vestbjerg/reports/absence",
        "/v1/municipalities/aalborg/reports/absence",
    ):
        r = await client.get(url, params=backwards, headers=ADMIN)
        assert r.status_code == 422, r.text
        assert {e["field"] for e in r.json()["errors"]} == {"query.from", "query.to"}
    r = await client.get("/v1/schools/vestbjerg/reports/patterns", params=backwards, headers=STAFF)
    assert r.status_code == 422
    r = await client.get("/v1/schools/vestbjerg/reports/absence", headers=STAFF)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"query.from", "query.to"}
    r = await client.get(
        "/v1/schools/vestbjerg/reports/absence",
        params={"from": "2026-02-30", "to": "soon"},
        headers=STAFF,
    )
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"query.from", "query.to"}
    r = await client.get(
        "/v1/schools/vestbjerg/reports/absence",
        params={"from": "2024-01-01", "to": "2026-09-07"},
        headers=STAFF,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.to"
    r = await client.get(
        "/v1/schools/vestbjerg/reports/baerum", params={"date": "yesterday"}, headers=STAFF
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.date"
    # Pupil-level reports are for the school's staff: the administrator gets 403.
    r = await client.get("/v1/schools/vestbjerg/reports/close-to-limit", headers=ADMIN)
    assert r.status_code == 403


async def test_grade_and_class_are_validated_on_the_enrolment(client: httpx.AsyncClient) -> None:
    await configure(client)
    body = {
        "event_id": "e1",
        "enrolled_from": "2026-08-10",
        "recorded_at": "2026-08-01T08:00:00+02:00",
        "grade": 14,
        "class_name": "x" * 33,
    }
    r = await client.put("/v1/schools/vestbjerg/enrolments/p1", json=body, headers=SYSTEM)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"grade", "class_name"}
    r = await client.get("/v1/pupils/p1/enrolments", headers=STAFF)
    assert r.status_code == 404  # nothing stored half-way


async def test_a_day_closed_after_its_registrations_no_longer_counts(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    await enrol(client, "p1", "2026-08-10", grade=4, class_name="4A")
    await post(
        client,
        [
            registration("p1", d("2026-09-07"), category="illness"),
            registration("p1", d("2026-09-08")),
        ],
    )
    # The school then makes 7 September a planning day: no school day, so neither the day
    # nor its registration counts any more.
    year = YEAR_BODY | {
        "closures": [
            *YEAR_BODY["closures"],
            {"first_day": "2026-09-07", "last_day": "2026-09-07", "reason": "planlægningsdag"},
        ]
    }
    r = await client.put(
        f"/v1/schools/vestbjerg/school-years/{SCHOOL_YEAR}", json=year, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    r = await client.get("/v1/schools/vestbjerg/reports/absence", params=PERIOD, headers=STAFF)
    school = row_of(r.json()["rows"], scope="school")
    assert figures(school) == (1, 9, "0.0000", "0.0000", "0.1111")
    assert (school["illness_days"], school["unauthorized_days"]) == ("0.0000", "1.0000")
    r = await client.get("/v1/schools/vestbjerg/reports/patterns", params=PERIOD, headers=STAFF)
    monday = next(x for x in r.json()["rows"] if x["key"] == "1" and x["kind"] == "weekday")
    assert (monday["pupil_days"], monday["illness_share"]) == (1, "0.0000")
