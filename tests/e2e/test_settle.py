"""The settle period, measured from outside (issue 9): a morning's registrations arrive in the
order a school system sends them (the days it had, then a correction, then the late days), so
concerns are raised, withdrawn and raised again within minutes. With a settle period every mail
that goes out is about a concern that still holds, each concern is mailed once, and nothing is
withdrawn by mail.

The stack runs with a settle period far longer than the test (NOTICE_SETTLE_SECONDS=3600); once
the morning has been evaluated, the test moves the waiting notices' due time to now, which is
what the passing of the period does. That keeps the outcome independent of the machine's speed.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from opspor_shared.devstack.mailbox import StoredMessage
from opspor_shared.devstack.postgres import admin_url, drop_database
from opspor_shared.devstack.stack import Stack
from tests.auth import RouteAuth
from tests.e2e.test_pipeline import configure
from tests.support import registration, school_days

pytestmark = pytest.mark.e2e
DAYS = school_days(date(2026, 9, 21), 8)
CORRECTED = [f"settle-a{i}" for i in range(12)]  # raised, withdrawn, raised again
PLAIN = [f"settle-b{i}" for i in range(12)]  # raised once
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir = tmp_path_factory.mktemp("settle")
    name = f"opspor_settle_{os.getpid()}"
    with Stack(
        var_dir=var_dir,
        database_name=name,
        recreate_database=True,
        extra_env={"TICK_SECONDS": "1", "NOTICE_SETTLE_SECONDS": "3600"},
    ) as running:
        yield running
    asyncio.run(drop_database(admin_url(var_dir), name))


def post(api: httpx.Client, items: list[dict[str, object]]) -> None:
    r = api.post("/v1/registrations/batch", json={"items": items})
    assert r.status_code == 200 and r.json()["inserted"] == len(items), r.text


def wait_until(
    api: httpx.Client, pupils: list[str], holds: Callable[[list[dict[str, object]]], bool]
) -> None:
    deadline = time.monotonic() + 60
    waiting = list(pupils)
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if not holds(api.get(f"/v1/pupils/{p}/concerns").json())]
        time.sleep(0.2)
    assert not waiting, f"not evaluated within 60 s: {waiting}"


def active(concerns: object) -> bool:
    return isinstance(concerns, list) and any(c["status"] == "active" for c in concerns)


def none_active(concerns: object) -> bool:
    return isinstance(concerns, list) and bool(concerns) and not active(concerns)


async def sql(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement))
            return [tuple(r) for r in result.all()] if result.returns_rows else []
    finally:
        await engine.dispose()


def test_a_shuffled_morning_mails_each_holding_concern_once_and_nothing_else(
    stack: Stack,
) -> None:
    assert stack.mailbox is not None
    with httpx.Client(
        base_url=stack.api_url, timeout=10, auth=RouteAuth(issuer=stack.issuer)
    ) as api:
        configure(api)
        # What the school system had first: five days away for everyone.
        post(api, [registration(p, d) for p in CORRECTED + PLAIN for d in DAYS[:5]])
        wait_until(api, CORRECTED + PLAIN, active)
        # Then the office's correction: one of those days was illness. Withdrawn.
        late = datetime(2026, 10, 2, 9, tzinfo=UTC)
        post(
            api,
            [registration(p, DAYS[2], category="illness", recorded_at=late) for p in CORRECTED],
        )
        wait_until(api, CORRECTED, none_active)
        # Then the days it sent late: five unauthorized days in a row again. Raised again.
        post(api, [registration(p, d) for p in CORRECTED for d in DAYS[5:]])
        wait_until(api, CORRECTED, lambda c: active(c) and len(c) > 1)

        holding = {
            c["concern_id"]
            for p in CORRECTED + PLAIN
            for c in api.get(f"/v1/pupils/{p}/concerns").json()
            if c["status"] == "active"
        }
        withdrawn = {
            c["concern_id"]
            for p in CORRECTED
            for c in api.get(f"/v1/pupils/{p}/concerns").json()
            if c["status"] == "withdrawn"
        }
    assert len(withdrawn) >= len(CORRECTED)
    url = stack.database_url
    # Everything the withdrawals cancelled is what a zero settle period would have mailed.
    [(cancelled,)] = asyncio.run(
        sql(url, "select count(*) from notices where status = 'cancelled'")
    )
    assert isinstance(cancelled, int) and cancelled >= len(CORRECTED)
    assert stack.mailbox.messages() == []  # nothing before the period has passed
    asyncio.run(sql(url, "update notices set next_attempt_at = now() where status = 'pending'"))

    deadline = time.monotonic() + 60
    mails: list[StoredMessage] = []
    mentioned: list[str] = []
    while time.monotonic() < deadline:
        mails = stack.mailbox.messages()
        mentioned = [m for mail in mails for m in set(UUID.findall(mail.message.get_content()))]
        if set(mentioned) >= holding:
            break
        time.sleep(0.2)
    time.sleep(2)  # anything more that was going to go out
    mails = stack.mailbox.messages()
    mentioned = [m for mail in mails for m in set(UUID.findall(mail.message.get_content()))]
    # Each holding concern in exactly one mail; no withdrawn concern in any; 0 extra mails.
    assert sorted(mentioned) == sorted(holding), (len(mails), len(holding))
    assert not set(mentioned) & withdrawn
    assert all("withdrawn" not in str(m.message["Subject"]).lower() for m in mails)
    print(
        f"\nsettle: {len(holding)} holding concerns, {len(mails)} mails, 0 extra; "
        f"{cancelled} notices cancelled inside the settle period"
    )
