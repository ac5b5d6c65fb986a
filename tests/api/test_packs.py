"""Rule packs through the API: shipped packs, stored packs, validation, immutable versions."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from tests.api.test_config import MUNICIPALITY, fields

LOCAL: dict[str, Any] = {
    "name": "Lokal regel",
    "source": "Byrådsbeslutning 2026",
    "versions": [
        {
            "version": "1",
            "effective_from": "2026-08-01",
            "rules": [
                {
                    "id": "consecutive-3",
                    "kind": "consecutive",
                    "n": 3,
                    "categories": ["unauthorized"],
                    "level": "concern",
                }
            ],
        }
    ],
}
BASE = "/v1/municipalities/aalborg/rule-packs"


async def _municipality(client: httpx.AsyncClient, municipality: str = "aalborg") -> None:
    r = await client.put(f"/v1/municipalities/{municipality}", json=MUNICIPALITY)
    assert r.status_code in (200, 201), r.text


async def test_every_pack_in_the_domain_brief_is_shipped(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/rule-packs")
    assert r.status_code == 200
    packs = {p["id"]: p for p in r.json()}
    assert set(packs) == {
        "dk-aalborg-2018",
        "dk-slagelse-2019",
        "dk-national",
        "en-dfe",
        "us-chronic",
        "no-loten",
    }
    assert all(p["source"] and not p["stored"] for p in packs.values())
    one = (await client.get("/v1/rule-packs/dk-national")).json()
    levels = {r["level"] for r in one["document"]["versions"][0]["rules"]}
    assert levels == {"warn-parents", "notify-municipality"}
    assert (await client.get("/v1/rule-packs/nope")).status_code == 404


async def test_a_stored_pack_can_be_used_by_its_municipality_only(
    client: httpx.AsyncClient,
) -> None:
    await _municipality(client)
    await _municipality(client, "herning")
    r = await client.put(f"{BASE}/lokal", json=LOCAL)
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["stored"] and stored["versions"] == [
        {"version": "1", "effective_from": "2026-08-01"}
    ]
    listed = {p["id"] for p in (await client.get(BASE)).json()}
    assert "lokal" in listed and "dk-national" in listed
    assert (await client.get(f"{BASE}/lokal")).json()["digest"] == stored["digest"]

    r = await client.put(
        "/v1/municipalities/aalborg",
        json=MUNICIPALITY | {"rule_packs": ["lokal", "dk-national"]},
    )
    assert r.status_code == 200, r.text
    r = await client.put(
        "/v1/municipalities/herning", json=MUNICIPALITY | {"rule_packs": ["lokal"]}
    )
    assert r.status_code == 422 and fields(r) == {"rule_packs[0]"}
    assert (await client.get("/v1/municipalities/herning/rule-packs/lokal")).status_code == 404


async def test_stored_versions_never_change_but_new_ones_can_be_added(
    client: httpx.AsyncClient,
) -> None:
    await _municipality(client)
    first = (await client.put(f"{BASE}/lokal", json=LOCAL)).json()
    again = await client.put(f"{BASE}/lokal", json=LOCAL | {"id": "lokal"})
    assert again.status_code == 200 and again.json()["digest"] == first["digest"]

    changed = copy.deepcopy(LOCAL)
    changed["versions"][0]["rules"][0]["n"] = 4
    r = await client.put(f"{BASE}/lokal", json=changed)
    assert r.status_code == 409
    assert fields(r) == {"versions[0]"}

    dropped = copy.deepcopy(LOCAL)
    dropped["versions"][0]["version"] = "2"
    r = await client.put(f"{BASE}/lokal", json=dropped)
    assert r.status_code == 409 and "'1' is missing" in r.text

    added = copy.deepcopy(LOCAL)
    version_two = copy.deepcopy(LOCAL["versions"][0]) | {
        "version": "2",
        "effective_from": "2027-01-01",
    }
    version_two["rules"][0]["n"] = 4
    added["versions"].append(version_two)
    r = await client.put(f"{BASE}/lokal", json=added)
    assert r.status_code == 200, r.text
    assert [v["version"] for v in r.json()["versions"]] == ["1", "2"]
    assert r.json()["digest"] != first["digest"]


async def test_every_mistake_in_a_pack_is_named(client: httpx.AsyncClient) -> None:
    await _municipality(client)
    bad = copy.deepcopy(LOCAL)
    bad["versions"][0]["rules"] = [
        {"id": "a", "kind": "sometimes", "categories": ["unauthorized"], "level": "concern"},
        {"id": "b", "kind": "count", "over": "rolling:20", "categories": ["x"], "level": "l"},
        {
            "id": "c",
            "kind": "count",
            "k": 30,
            "over": "rolling:20",
            "categories": ["illness"],
            "level": "concern",
        },
    ]
    for label in ("2", "3"):  # both valid, both from the same day: they overlap
        bad["versions"].append(
            copy.deepcopy(LOCAL["versions"][0]) | {"version": label, "effective_from": "2027-01-01"}
        )
    r = await client.put(f"{BASE}/lokal", json=bad)
    assert r.status_code == 422
    assert fields(r) == {
        "versions[0].rules[0].kind",
        "versions[0].rules[1].k",
        "versions[0].rules[1].categories",
        "versions[0].rules[2].k",
        "versions[2].effective_from",
    }
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert "/versions/0/rules/2/k" in pointers
    assert (await client.get(f"{BASE}/lokal")).status_code == 404


async def test_toml_bodies_and_unreadable_bodies(client: httpx.AsyncClient) -> None:
    await _municipality(client)
    toml = """
name = "Lokal"
source = "test"
[[versions]]
version = "1"
effective_from = 2026-08-01
day_threshold = 0.75
[[versions.rules]]
id = "share"
kind = "share"
p = 0.10
over = "quarter"
min_days = 20
categories = ["unauthorized"]
level = "warn-parents"
"""
    r = await client.put(
        f"{BASE}/lokal", content=toml, headers={"content-type": "application/toml"}
    )
    assert r.status_code == 201, r.text
    version = r.json()["document"]["versions"][0]
    assert version["day_threshold"] == "0.75" and version["rules"][0]["p"] == "0.1"

    r = await client.put(
        f"{BASE}/other", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and fields(r) == {"body"}
    r = await client.put(f"{BASE}/other", json=[1, 2])
    assert r.status_code == 422 and fields(r) == {"body"}
    r = await client.put(f"{BASE}/other", json=LOCAL | {"id": "else"})
    assert r.status_code == 422 and fields(r) == {"id"}
    r = await client.put(f"{BASE}/dk-national", json=LOCAL)
    assert r.status_code == 409
    r = await client.put("/v1/municipalities/nowhere/rule-packs/lokal", json=LOCAL)
    assert r.status_code == 404
