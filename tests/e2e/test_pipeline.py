"""The three services as separate processes, from an HTTP registration to mail in the mailbox."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from babel.dates import format_date

from opspor_shared.auth import Role
from opspor_shared.devstack.mailbox import StoredMessage
from opspor_shared.devstack.postgres import admin_url, drop_database
from opspor_shared.devstack.stack import Stack
from tests.auth import RouteAuth
from tests.ops_names import WIRED_ELSEWHERE, exposed, names_used
from tests.support import SCHOOL_YEAR, YEAR_BODY, registration, school_days

pytestmark = pytest.mark.e2e
MONDAY = date(2026, 9, 21)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir = tmp_path_factory.mktemp("stack")
    name = f"opspor_e2e_{os.getpid()}"
    with Stack(
        var_dir=var_dir,
        database_name=name,
        recreate_database=True,
        extra_env={
            "TICK_SECONDS": "1",
            "LOG_LEVEL": "INFO",
            "KAFKA_LAG_INTERVAL_SECONDS": "1",
            "COMPLETENESS_INTERVAL_SECONDS": "1",
            "CASE_CHECK_SECONDS": "1",
            # Mail at once: tests/e2e/test_settle.py measures the settle period.
            "NOTICE_SETTLE_SECONDS": "0",
        },
    ) as running:
        with httpx.Client(
            base_url=running.api_url, timeout=10, auth=RouteAuth(issuer=running.issuer)
        ) as api:
            configure(api)
        yield running
    asyncio.run(drop_database(admin_url(var_dir), name))


def configure(api: httpx.Client) -> None:
    for path, body in (
        (
            "/v1/municipalities/aalborg",
            {
                "name": "Aalborg",
                "country": "DK",
                "language": "da",
                "rule_packs": ["dk-aalborg-2018"],
                # Its PPR levels must reach someone (routing refuses a pack otherwise).
                "ppr_mailbox": "ppr@sikkerpost.aalborg.dk",
            },
        ),
        (
            "/v1/schools/vestbjerg",
            {
                "municipality_id": "aalborg",
                "name": "Vestbjerg Skole",
                "timezone": "Europe/Copenhagen",
                "mailbox": "vestbjerg@sikkerpost.aalborg.dk",
            },
        ),
        (f"/v1/schools/vestbjerg/school-years/{SCHOOL_YEAR}", YEAR_BODY),
    ):
        assert api.put(path, json=body).status_code in (200, 201)


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.api_url, timeout=10, auth=RouteAuth(issuer=stack.issuer)
    ) as client:
        yield client


def wait_for_mail(
    stack: Stack, predicate: object, count: int = 1, timeout: float = 60.0
) -> list[StoredMessage]:
    assert stack.mailbox is not None
    deadline = time.monotonic() + timeout
    found: list[StoredMessage] = []
    while time.monotonic() < deadline:
        found = [m for m in stack.mailbox.messages() if predicate(m)]  # type: ignore[operator]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    return found


def danish(d: date) -> str:
    return format_date(d, format="long", locale="da_DK")


def about(pupil: str) -> object:
    return lambda m: pupil in m.message.get_content()


def test_a_registration_travels_from_http_to_the_secure_mailbox(
    stack: Stack, api: httpx.Client
) -> None:
    days = school_days(MONDAY, 5)
    items = [registration("e2e-1", d) for d in days]
    r = api.post("/v1/registrations/batch", json={"items": items})
    assert r.json()["inserted"] == 5
    # The same events again (a producer retry) must not send anything more.
    assert api.post("/v1/registrations/batch", json={"items": items}).json()["duplicates"] == 5

    [mail] = wait_for_mail(stack, about("e2e-1"))
    assert mail.tls
    assert list(mail.envelope_to) == ["vestbjerg@sikkerpost.aalborg.dk"]
    body = mail.message.get_content()
    # Danish, as the school's language: dates as Danes write them (Babel's CLDR data).
    assert "Vestbjerg Skole" in body and danish(days[-1]) in body
    assert "5 fraværsdage i træk" in body

    # The api's read model consumes the same events as the alerter and may trail the mail.
    deadline = time.monotonic() + 30
    concerns: list[dict[str, Any]] = []
    while not concerns and time.monotonic() < deadline:
        concerns = api.get("/v1/pupils/e2e-1/concerns").json()
        time.sleep(0.1)
    assert [(c["rule_id"], c["status"]) for c in concerns] == [("consecutive-5", "active")]
    assert concerns[0]["concern_id"] in body

    # A correction (the absence was illness after all) withdraws the concern and tells the
    # same mailbox; the original notice is not sent again.
    fix = registration(
        "e2e-1", days[2], category="illness", recorded_at=datetime(2026, 10, 1, tzinfo=UTC)
    )
    assert api.post("/v1/registrations", json=fix).status_code == 201
    mails = wait_for_mail(stack, about("e2e-1"), count=2)
    assert len(mails) == 2
    time.sleep(1.0)
    assert len(wait_for_mail(stack, about("e2e-1"), count=3, timeout=1)) == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        concerns = api.get("/v1/pupils/e2e-1/concerns").json()
        if concerns[0]["status"] == "withdrawn":
            break
        time.sleep(0.2)
    assert concerns[0]["status"] == "withdrawn"


def test_a_concern_opens_a_case_whose_missed_follow_up_reminds_the_school(
    stack: Stack, api: httpx.Client
) -> None:
    days = school_days(date(2026, 10, 5), 5)
    items = [registration("e2e-case", d) for d in days]
    assert api.post("/v1/registrations/batch", json={"items": items}).json()["inserted"] == 5
    # The api's concern consumer opens the case (the municipality's model: dk-ladder).
    deadline = time.monotonic() + 30
    cases = api.get("/v1/pupils/e2e-case/cases")
    while cases.status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.2)
        cases = api.get("/v1/pupils/e2e-case/cases")
    [case] = cases.json()
    assert (case["model_id"], case["phase"], case["source"]) == (
        "dk-ladder",
        "class-team",
        "absence-data",
    )
    full = api.get(f"/v1/cases/{case['id']}")
    [concern] = [e for e in full.json()["entries"] if e["kind"] == "concern"]
    assert concern["data"]["rule_id"] == "consecutive-5"
    # The class team agreed a follow-up for yesterday and has not held it: the next check of
    # the clocks finds the case overdue, and the alerter reminds the school's mailbox.
    yesterday = datetime.now(ZoneInfo("Europe/Copenhagen")).date() - timedelta(days=1)
    r = api.post(
        f"/v1/cases/{case['id']}/entries",
        json={"kind": "evaluation", "due": yesterday.isoformat()},
        headers={"If-Match": full.headers["etag"]},
    )
    assert r.status_code == 201, r.text
    [reminder] = wait_for_mail(stack, lambda m: case["id"] in m.message.get_content())
    assert reminder.tls
    assert list(reminder.envelope_to) == ["vestbjerg@sikkerpost.aalborg.dk"]
    assert danish(yesterday) in reminder.message.get_content()
    deadline = time.monotonic() + 30
    overdue: list[dict[str, Any]] = []
    while not overdue and time.monotonic() < deadline:
        overdue = api.get("/v1/schools/vestbjerg/cases?overdue=true").json()["items"]
        time.sleep(0.2)
    assert [c["overdue_reasons"] for c in overdue] == [["evaluation-overdue"]]
    # Once per case, reason and day: the checks every second send nothing more.
    time.sleep(3)
    assert len(wait_for_mail(stack, lambda m: case["id"] in m.message.get_content(), 2, 1)) == 1


def test_nothing_is_lost_while_the_worker_and_alerter_are_down(
    stack: Stack, api: httpx.Client
) -> None:
    worker, alerter = stack.services["threshold-worker"], stack.services["alerter"]
    worker.stop(kill=True)
    alerter.stop(kill=True)
    try:
        items = [registration("e2e-2", d) for d in school_days(MONDAY, 5)]
        assert api.post("/v1/registrations/batch", json={"items": items}).status_code == 200
    finally:
        worker.start()
        alerter.start()
        worker.wait_ready()
        alerter.wait_ready()
    assert len(wait_for_mail(stack, about("e2e-2"))) == 1
    time.sleep(1.0)
    assert len(wait_for_mail(stack, about("e2e-2"), count=2, timeout=1)) == 1


def test_after_one_registration_to_mail_every_metric_the_operator_queries_is_exposed(
    stack: Stack, api: httpx.Client
) -> None:
    items = [registration("e2e-3", d) for d in school_days(MONDAY, 5)]
    assert api.post("/v1/registrations/batch", json={"items": items}).status_code == 200
    assert len(wait_for_mail(stack, about("e2e-3"))) == 1
    ops = stack.headers(Role.OPERATIONS)
    lag = 'opspor_kafka_consumer_lag_messages{group="opspor-alerter"'
    texts: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for name, service in stack.services.items():
            assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
            r = httpx.get(f"{service.url}/metrics", headers=ops, timeout=10)
            assert r.status_code == 200
            texts[name] = r.text
        if lag in texts["alerter"] and "opspor_school_silent_school_days{" in texts["api"]:
            break
        time.sleep(0.5)
    exposed_names = set().union(*(exposed(t) for t in texts.values()))
    assert names_used() - exposed_names - WIRED_ELSEWHERE == set()
    # Values, not only names: the run left these series behind.
    assert lag in texts["alerter"]
    assert (
        'opspor_kafka_consumer_lag_messages{group="opspor-threshold-worker"'
        in texts["threshold-worker"]
    )
    assert 'opspor_registrations_accepted_total{result="stored"}' in texts["api"]
    assert 'route="/v1/registrations/batch"' in texts["api"]
    assert (
        'opspor_alerter_delivery_attempts_total{channel="smtp",outcome="sent"}' in texts["alerter"]
    )
    assert 'opspor_ready{check="kafka"} 1.0' in texts["alerter"]
    # No pupil id in any label.
    assert not any("e2e-" in t for t in texts.values())
