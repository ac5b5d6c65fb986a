"""Routing the municipality sets (issue 9): per level, who gets the notices; per-school
overrides; every mistake named by its place with nothing stored; every change logged; and a
level that would reach nobody refused when the routing or the packs are stored."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.models import RoutingChange
from opspor_shared.auth import Role
from tests.api.test_config import MUNICIPALITY
from tests.auth import bearer
from tests.support import configure

URL = "/v1/municipalities/aalborg/routing"
SCHOOLCHEF = "skolechef@sikkerpost.aalborg.dk"


def fields(r: httpx.Response) -> set[str]:
    return {e["field"] for e in r.json()["errors"]}


async def test_a_municipality_routes_a_level_to_more_recipients_and_the_change_is_logged(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    before = (await client.get(URL)).json()
    # The default table until a document is stored.
    assert before["levels"] == {}
    assert before["effective"]["ppr-must"] == [{"to": "ppr"}]
    assert before["effective"]["concern"] == [{"to": "school"}]

    document: dict[str, Any] = {
        "levels": {"ppr-must": [{"to": "ppr"}, {"to": "mailbox", "address": SCHOOLCHEF}]}
    }
    r = await client.put(URL, json=document)
    assert r.status_code == 200, r.text
    assert r.json()["levels"] == document["levels"]
    effective = r.json()["effective"]
    assert effective["ppr-must"] == document["levels"]["ppr-must"]
    assert effective["ppr-may"] == [{"to": "ppr"}]  # not named: the default table
    assert effective["concern"] == [{"to": "school"}]
    assert (await client.get(URL)).json()["levels"] == document["levels"]
    async with sessionmaker() as session:
        [change] = (await session.scalars(select(RoutingChange))).all()
    assert (change.municipality_id, change.school_id, change.document) == (
        "aalborg",
        None,
        document,
    )
    assert change.by


async def test_every_mistake_is_named_by_its_place_and_nothing_changes(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    bad = {
        "levels": {
            "Not A Level": [{"to": "school"}],
            "concern": [],
            "ppr-may": [{"to": "fax"}, "school"],
            "ppr-must": [
                {"to": "mailbox", "address": "nope"},
                {"to": "webhook", "id": "never-stored"},
                {"to": "school", "address": "x@y.dk"},
                {"to": "mailbox", "address": "a@b.dk\r\nBcc: evil@x.dk"},
            ],
        },
        "extra": 1,
    }
    r = await client.put(URL, json=bad)
    assert r.status_code == 422, r.text
    assert fields(r) == {
        "extra",
        "levels.Not A Level",
        "levels.concern",
        "levels.ppr-may[0].to",
        "levels.ppr-may[1]",
        "levels.ppr-must[0].address",
        "levels.ppr-must[1].id",
        "levels.ppr-must[2].address",
        "levels.ppr-must[3].address",
    }
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert "/levels/ppr-must/1/id" in pointers
    assert (await client.get(URL)).json()["levels"] == {}
    async with sessionmaker() as session:
        assert (await session.scalars(select(RoutingChange))).all() == []


async def test_a_level_that_would_reach_nobody_is_refused_when_routing_or_packs_are_stored(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)  # PPR mailbox set, no unit mailbox
    r = await client.put(URL, json={"levels": {"ppr-must": [{"to": "unit"}]}})
    assert r.status_code == 422 and fields(r) == {"levels.ppr-must"}, r.text
    assert "reach nobody" in r.json()["errors"][0]["detail"]

    # dk-national's notify-municipality: the default table sends it to the unit mailbox,
    # which Aalborg has not set. Refused when the packs are chosen, not at 8 am.
    body = MUNICIPALITY | {"rule_packs": ["dk-aalborg-2018", "dk-national"]}
    del body["unit_mailbox"]
    r = await client.put("/v1/municipalities/aalborg", json=body)
    assert r.status_code == 422 and fields(r) == {"rule_packs"}, r.text
    assert "notify-municipality" in r.json()["errors"][0]["detail"]
    assert (await client.get("/v1/municipalities/aalborg")).json()["rule_packs"] == [
        "dk-aalborg-2018"
    ]
    # Routed to a named mailbox first, the same packs are accepted.
    r = await client.put(
        URL, json={"levels": {"notify-municipality": [{"to": "mailbox", "address": SCHOOLCHEF}]}}
    )
    assert r.status_code == 200, r.text
    r = await client.put("/v1/municipalities/aalborg", json=body)
    assert r.status_code == 200, r.text


async def test_a_school_overrides_a_level_and_can_drop_its_overrides(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    url = "/v1/schools/vestbjerg/routing"
    leader = {"to": "mailbox", "address": "leder@vestbjerg.dk"}
    r = await client.put(url, json={"levels": {"concern": [leader]}})
    assert r.status_code == 200, r.text
    assert r.json()["school_id"] == "vestbjerg"
    assert r.json()["effective"]["concern"] == [leader]
    assert r.json()["effective"]["ppr-must"] == [{"to": "ppr"}]
    assert (await client.delete(url)).status_code == 204
    assert (await client.get(url)).json()["effective"]["concern"] == [{"to": "school"}]
    async with sessionmaker() as session:
        changes = (await session.scalars(select(RoutingChange).order_by(RoutingChange.id))).all()
    assert [(c.school_id, c.document is None) for c in changes] == [
        ("vestbjerg", False),
        ("vestbjerg", True),
    ]


async def test_only_the_municipalitys_administrator_sets_its_routing(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    body = {"levels": {"concern": [{"to": "school"}]}}
    other = bearer(Role.MUNICIPALITY_ADMIN, "odense")
    staff = bearer(Role.SCHOOL_STAFF, schools=["vestbjerg"])
    assert (await client.put(URL, json=body, headers=other)).status_code == 404
    assert (await client.put(URL, json=body, headers=staff)).status_code == 403
    r = await client.put("/v1/schools/vestbjerg/routing", json=body, headers=other)
    assert r.status_code == 404


async def test_a_send_window_is_stored_with_its_recipient_and_checked_whole(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    window = {"days": [1, 2, 3, 4, 5], "from": "07:00", "to": "17:00"}
    r = await client.put(URL, json={"levels": {"concern": [{"to": "school", "window": window}]}})
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["concern"] == [{"to": "school", "window": window}]
    bad = {
        "levels": {
            "concern": [
                {"to": "school", "window": {"days": [0, 5, 5], "from": "7", "to": "25:00"}}
            ],
            "ppr-may": [{"to": "ppr", "window": {"days": [1], "from": "17:00", "to": "07:00"}}],
            "ppr-must": [{"to": "webhook", "id": "x", "window": window}],
        }
    }
    r = await client.put(URL, json=bad)
    assert r.status_code == 422
    assert fields(r) == {
        "levels.concern[0].window.days",
        "levels.concern[0].window.from",
        "levels.concern[0].window.to",
        "levels.ppr-may[0].window.to",
        "levels.ppr-must[0].window",
        "levels.ppr-must[0].id",
    }


async def test_a_daily_digest_is_stored_with_its_recipient_and_checked_against_its_window(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    window = {"days": [1, 2, 3, 4, 5], "from": "07:00", "to": "17:00"}
    chief = {"to": "mailbox", "address": "chef@k.dk", "digest": "08:00", "window": window}
    r = await client.put(URL, json={"levels": {"concern": [chief]}})
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["concern"] == [chief]
    before = (await client.get(URL)).json()
    bad = {
        "levels": {
            "concern": [{"to": "school", "digest": "8 am"}, {**chief, "digest": "17:30"}],
            "ppr-must": [{"to": "webhook", "id": "x", "digest": "08:00"}],
        }
    }
    r = await client.put(URL, json=bad)
    assert r.status_code == 422
    assert fields(r) == {
        "levels.concern[0].digest",
        "levels.concern[1].digest",
        "levels.ppr-must[0].digest",
        "levels.ppr-must[0].id",
    }
    assert (await client.get(URL)).json() == before  # nothing stored
