"""Register completeness (DOMAIN.md s.10): declarations, the report per school day and the
silent-school gauge, all under a fixed clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.completeness import service
from opspor_api.completeness.repository import CompletenessRepository
from opspor_api.settings import ApiSettings
from opspor_shared.auth import Role
from opspor_shared.reference import CalendarCache
from tests.auth import RouteAuth, bearer
from tests.support import configure, registration

MONDAY = date(2026, 9, 21)
# Thursday 24 September 2026, 10:00 in Copenhagen: Monday to Wednesday are finished days.
THURSDAY_MORNING = datetime(2026, 9, 24, 8, 0, tzinfo=UTC)


class MovableClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(THURSDAY_MORNING)


@pytest.fixture
async def api(settings: ApiSettings, clock: MovableClock) -> AsyncIterator[httpx.AsyncClient]:
    # A short interval, so the silent-school loop's next round comes within the test.
    fast = settings.model_copy(update={"completeness_interval_seconds": 0.2})
    app = create_app(fast, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", auth=RouteAuth()
        ) as c:
            await configure(c)
            yield c


async def test_a_declaration_is_stored_once_and_repeats_answer_with_the_first(
    api: httpx.AsyncClient,
) -> None:
    url = "/v1/schools/vestbjerg/register-complete"
    first = await api.post(
        url, json={"date": "2026-09-22", "recorded_at": "2026-09-22T09:00:00+02:00"}
    )
    assert first.status_code == 201, first.text
    assert first.json()["class_id"] is None
    again = await api.post(
        url, json={"date": "2026-09-22", "recorded_at": "2026-09-22T15:00:00+02:00"}
    )
    assert again.status_code == 200
    assert again.json()["recorded_at"] == first.json()["recorded_at"]
    klass = await api.post(url, json={"date": "2026-09-22", "class_id": "7a"})
    assert klass.status_code == 201 and klass.json()["class_id"] == "7a"
    assert (await api.post(url, json={"date": "2026-09-22", "class_id": "7a"})).status_code == 200


async def test_bad_declarations_name_every_field_and_store_nothing(api: httpx.AsyncClient) -> None:
    url = "/v1/schools/vestbjerg/register-complete"
    cases = {
        "2026-09-26": "weekend",  # a Saturday
        "2026-10-13": "closed: efterårsferie",
        "2026-09-25": "in the future",  # tomorrow at the school
    }
    for day, reason in cases.items():
        r = await api.post(url, json={"date": day})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        [error] = r.json()["errors"]
        assert error["field"] == "date" and reason in error["detail"]
    r = await api.post(url, json={"date": "2026-09-22", "class_id": "7 a", "extra": 1})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"class_id", "extra"}
    r = await api.post("/v1/schools/nowhere/register-complete", json={"date": "2026-09-22"})
    assert r.status_code == 404
    report = (
        await api.get("/v1/schools/vestbjerg/completeness?from=2026-09-21&to=2026-09-25")
    ).json()
    assert report["complete"] == report["partial"] == 0


async def test_the_report_shows_each_school_day_as_complete_partial_or_missing(
    api: httpx.AsyncClient,
) -> None:
    system = bearer(Role.SCHOOL_SYSTEM)
    url = "/v1/schools/vestbjerg/register-complete"
    assert (await api.post(url, json={"date": "2026-09-21"})).status_code == 201
    assert (await api.post(url, json={"date": "2026-09-22", "class_id": "7a"})).status_code == 201
    assert (await api.post(url, json={"date": "2026-09-22", "class_id": "6b"})).status_code == 201
    r = await api.post(
        "/v1/registrations/batch",
        json={
            "items": [
                registration("elev-1", MONDAY),
                registration("elev-2", MONDAY),
                registration("elev-1", date(2026, 9, 23)),
            ]
        },
        headers=system,
    )
    assert r.status_code == 200, r.text
    r = await api.get("/v1/schools/vestbjerg/completeness?from=2026-09-19&to=2026-10-02")
    assert r.status_code == 200, r.text
    report = r.json()
    # Days after today (Thursday) are not due yet; the weekend is no school day.
    assert [d["date"] for d in report["days"]] == [
        "2026-09-21",
        "2026-09-22",
        "2026-09-23",
        "2026-09-24",
    ]
    assert [(d["status"], d["registrations"], d["silent"]) for d in report["days"]] == [
        ("complete", 2, False),
        ("partial", 0, False),
        ("missing", 1, False),
        ("missing", 0, True),
    ]
    assert report["days"][1]["classes_complete"] == ["6b", "7a"]
    assert (report["from"], report["to"], report["school_days"]) == ("2026-09-19", "2026-10-02", 4)
    assert (report["complete"], report["partial"], report["missing"]) == (1, 1, 2)
    # Staff and the municipality's administrator read it too; the default range ends today.
    for role in (Role.SCHOOL_STAFF, Role.MUNICIPALITY_ADMIN):
        r = await api.get("/v1/schools/vestbjerg/completeness", headers=bearer(role))
        assert r.status_code == 200 and r.json()["to"] == "2026-09-24"
    r = await api.get("/v1/schools/vestbjerg/completeness?from=2026-09-25&to=2026-09-21")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.from"
    r = await api.get("/v1/schools/vestbjerg/completeness?from=2025-09-01&to=2026-09-21")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.to"


async def test_a_school_silent_for_school_days_in_a_row_is_counted_under_a_fixed_clock(
    api: httpx.AsyncClient,
    clock: MovableClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    calendars = CalendarCache()

    async def silent() -> int:
        async with sessionmaker() as session:
            found = await service.silent_school_days(
                CompletenessRepository(session), calendars, clock()
            )
        assert set(found) == {"vestbjerg"} and found["vestbjerg"][0] == "aalborg"
        return found["vestbjerg"][1]

    # Nothing ever arrived: every finished day of the look-back is silent.
    assert await silent() == service.SILENT_LOOKBACK_DAYS
    r = await api.post("/v1/registrations", json=registration("elev-1", MONDAY))
    assert r.status_code == 201
    assert await silent() == 2  # Tuesday and Wednesday
    # A declaration without any absence is something too: everyone came on Wednesday.
    r = await api.post("/v1/schools/vestbjerg/register-complete", json={"date": "2026-09-23"})
    assert r.status_code == 201
    assert await silent() == 0
    # Thursday itself does not count while it is going on; the weekend is not school days.
    clock.now = datetime(2026, 9, 28, 8, 0, tzinfo=UTC)  # Monday
    assert await silent() == 2  # Thursday and Friday
    clock.now = datetime(2026, 9, 25, 8, 0, tzinfo=UTC)  # Friday morning
    assert await silent() == 1


async def test_the_api_publishes_the_silent_school_gauge_on_metrics(
    api: httpx.AsyncClient,
) -> None:
    """The api's own loop ran at start-up (the app's clock: Thursday morning, nothing sent)."""
    ops = bearer(Role.OPERATIONS)
    # The loop's first round ran before the school existed; the next round finds it.
    wanted = 'opspor_school_silent_school_days{municipality="aalborg",school="vestbjerg"} 10.0'
    text = ""
    for _ in range(100):
        text = (await api.get("/metrics", headers=ops)).text
        if wanted in text:
            break
        await asyncio.sleep(0.1)
    assert wanted in text


async def test_extreme_dates_are_answered_without_a_server_error(api: httpx.AsyncClient) -> None:
    for query in (
        "to=0001-01-01",
        "from=0001-01-01&to=0001-01-02",
        "from=9999-12-01&to=9999-12-31",
    ):
        r = await api.get(f"/v1/schools/vestbjerg/completeness?{query}")
        assert r.status_code == 200, (query, r.text)
        assert r.json()["days"] == []
    r = await api.post("/v1/schools/vestbjerg/register-complete", json={"date": "9999-12-31"})
    assert r.status_code == 422
