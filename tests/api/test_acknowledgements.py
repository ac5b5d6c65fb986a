"""Acknowledging a concern (issue 9): staff say they saw it, or handle it in one of the pupil's
cases; every read of the concern shows who and when; bad input is refused whole and nothing is
stored; other schools' staff cannot acknowledge what they cannot see."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.models import AuditEntry, ConcernAcknowledgement
from tests.api.test_access import (
    CASE_OF,
    MUNICIPALITY_OF,
    PPR,
    PUPIL_OF,
    STAFF,
    SYSTEM,
    concern_id,
    seed,
)
from tests.api.test_access import token as bearer_of


async def acks(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(ConcernAcknowledgement))
        return int(count or 0)


async def test_staff_acknowledge_a_concern_seen_then_handled_in_a_case(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed(client, sessionmaker)
    staff = bearer_of(STAFF, "aalborg", "a1")
    concern = concern_id("a1", "concern")
    url = f"/v1/concerns/{concern}/acknowledgement"

    r = await client.put(url, json={"as": "seen"}, headers=staff)
    assert r.status_code == 200, r.text
    seen = r.json()["acknowledgement"]
    assert (seen["as"], seen["case_id"]) == ("seen", None) and seen["by"] and seen["at"]

    r = await client.put(url, json={"as": "handled", "case_id": CASE_OF["a1"]}, headers=staff)
    assert r.status_code == 200, r.text
    # Every read shows the latest acknowledgement: one concern, the pupil's, the school's.
    for path in (f"/v1/concerns/{concern}", f"/v1/pupils/{PUPIL_OF['a1']}/concerns"):
        body = (await client.get(path, headers=staff)).json()
        found = (
            body
            if isinstance(body, dict)
            else next(c for c in body if c["concern_id"] == str(concern))
        )
        assert found["acknowledgement"]["as"] == "handled"
        assert found["acknowledgement"]["case_id"] == CASE_OF["a1"]
    assert await acks(sessionmaker) == 1
    async with sessionmaker() as session:
        writes = await session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.endpoint == "/v1/concerns/{concern_id}/acknowledgement")
        )
    assert writes == 2


async def test_a_bad_acknowledgement_names_every_problem_and_stores_nothing(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed(client, sessionmaker)
    staff = bearer_of(STAFF, "aalborg", "a1")
    url = f"/v1/concerns/{concern_id('a1', 'concern')}/acknowledgement"

    r = await client.put(url, json={"as": "maybe", "case": "x"}, headers=staff)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"as", "case"}

    r = await client.put(url, json={"as": "handled"}, headers=staff)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["case_id"]

    # Another school's case, and a case that does not exist: not a case of this pupil.
    for case in (CASE_OF["a2"], str(uuid.uuid4())):
        r = await client.put(url, json={"as": "handled", "case_id": case}, headers=staff)
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["case_id"]
    assert await acks(sessionmaker) == 0


async def test_only_those_who_see_the_concern_can_acknowledge_it(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed(client, sessionmaker)
    body = {"as": "seen"}
    own = f"/v1/concerns/{concern_id('a1', 'concern')}/acknowledgement"
    for headers, status in (
        (bearer_of(STAFF, "aalborg", "a2"), 404),  # another school
        (bearer_of(STAFF, MUNICIPALITY_OF["o1"], "o1"), 404),  # another municipality
        (bearer_of(PPR, "aalborg", "a1"), 404),  # PPR sees PPR-level concerns only
        (bearer_of(SYSTEM, "aalborg", "a1"), 403),  # a school system posts, never reads
    ):
        assert (await client.put(own, json=body, headers=headers)).status_code == status
    # PPR acknowledges the PPR-level concern routed to it.
    ppr_level = f"/v1/concerns/{concern_id('a1', 'ppr-may')}/acknowledgement"
    r = await client.put(ppr_level, json=body, headers=bearer_of(PPR, "aalborg", "a1"))
    assert r.status_code == 200, r.text
    assert await acks(sessionmaker) == 1
