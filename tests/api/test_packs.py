"""Rule packs through the API: shipped packs, stored packs, validation, immutable versions."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import httpx

from opspor_shared.auth import Role
from tests.api.test_config import MUNICIPALITY, fields
from tests.auth import bearer
from tests.support import configure, registration, school_days

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


def _admin(municipality: str) -> dict[str, str]:
    return bearer(Role.MUNICIPALITY_ADMIN, municipality)


async def _municipality(client: httpx.AsyncClient, municipality: str = "aalborg") -> None:
    r = await client.put(
        f"/v1/municipalities/{municipality}", json=MUNICIPALITY, headers=_admin(municipality)
    )
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
        "/v1/municipalities/herning",
        json=MUNICIPALITY | {"rule_packs": ["lokal"]},
        headers=_admin("herning"),
    )
    assert r.status_code == 422 and fields(r) == {"rule_packs[0]"}
    r = await client.get("/v1/municipalities/herning/rule-packs/lokal", headers=_admin("herning"))
    assert r.status_code == 404
    # Another municipality's administrator does not see Aalborg's packs at all.
    r = await client.get(f"{BASE}/lokal", headers=_admin("herning"))
    assert r.status_code == 404 and "Lokal" not in r.text


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
    # A wrong id and a bad rule in one answer.
    wrong = copy.deepcopy(LOCAL) | {"id": "else"}
    wrong["versions"][0]["rules"][0]["n"] = 0
    r = await client.put(f"{BASE}/other", json=wrong)
    assert r.status_code == 422 and fields(r) == {"id", "versions[0].rules[0].n"}, r.text
    r = await client.put(f"{BASE}/dk-national", json=LOCAL)
    assert r.status_code == 409
    r = await client.put("/v1/municipalities/nowhere/rule-packs/lokal", json=LOCAL)
    assert r.status_code == 404


async def test_dry_run_reports_added_and_removed_concerns_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    days = school_days(date(2026, 9, 7), 5)
    items = [registration("five", d) for d in days] + [registration("three", d) for d in days[:3]]
    r = await client.post("/v1/registrations/batch", json={"items": items})
    assert r.json()["inserted"] == 8, r.text
    candidate = copy.deepcopy(LOCAL) | {"id": "aalborg-strict"}
    body = {
        "pack": candidate,
        "replaces": "dk-aalborg-2018",
        "first_day": "2026-08-10",
        "last_day": "2026-11-20",
    }
    before = (await client.get("/v1/municipalities/aalborg")).json()

    r = await client.post(f"{BASE}/dry-run", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["schools"], out["pupils_evaluated"]) == (["vestbjerg"], 2)
    assert (out["added"], out["removed"], out["unchanged"]) == (2, 1, 0)
    assert out["counts"] == [
        {"school_id": "vestbjerg", "level": "concern", "added": 2, "removed": 1}
    ]
    assert {(c["pupil_id"], c["rule_id"], c["crossing_date"]) for c in out["concerns_added"]} == {
        ("five", "consecutive-3", days[2].isoformat()),
        ("three", "consecutive-3", days[2].isoformat()),
    }
    [gone] = out["concerns_removed"]
    assert (gone["pupil_id"], gone["rule_id"], gone["crossing_date"]) == (
        "five",
        "consecutive-5",
        days[4].isoformat(),
    )
    assert "limit 5" in gone["summary"]

    # The range limits what is compared: before the crossings nothing differs.
    r = await client.post(f"{BASE}/dry-run", json=body | {"last_day": days[1].isoformat()})
    assert (r.json()["added"], r.json()["removed"]) == (0, 0)
    # Trying the candidate alongside the packs in force adds and removes nothing else.
    r = await client.post(f"{BASE}/dry-run", json=body | {"replaces": None})
    assert (r.json()["added"], r.json()["removed"]) == (2, 0)

    assert (await client.get("/v1/municipalities/aalborg")).json() == before
    assert (await client.get(f"{BASE}/aalborg-strict")).status_code == 404


# The school system of both schools of the enrolment test.
BOTH = bearer(Role.SCHOOL_SYSTEM, "aalborg", ("vestbjerg", "lind"))


async def _enrol(
    client: httpx.AsyncClient, pupil: str, school: str, first: date, until: date | None = None
) -> None:
    body = {
        "event_id": f"{pupil}-{school}",
        "enrolled_from": first.isoformat(),
        "enrolled_until": until.isoformat() if until else None,
        "recorded_at": "2026-08-01T08:00:00+02:00",
    }
    r = await client.put(f"/v1/schools/{school}/enrolments/{pupil}", json=body, headers=BOTH)
    assert r.status_code == 200, r.text


async def test_dry_run_judges_each_pupil_over_their_enrolments_as_the_worker_does(
    client: httpx.AsyncClient,
) -> None:
    """Days before a pupil's enrolment do not count, windows reach back across a move, and a
    crossing on a day the pupil attends another school belongs to that school."""
    await configure(client)
    # A second school of the municipality, which keeps packs of its own: not compared.
    await configure(
        client,
        school="lind",
        mailbox="lind@sikkerpost.aalborg.dk",
        school_rule_packs=("dk-slagelse-2019",),
    )
    days = school_days(date(2026, 9, 7), 5)  # Monday to Friday
    # Enrolled from Wednesday: the absences on Monday and Tuesday were not at this school.
    await _enrol(client, "late", "vestbjerg", days[2])
    # Moved in on Wednesday from Lind, and moved away to Lind on Wednesday.
    await _enrol(client, "moved-in", "lind", date(2026, 8, 10), days[1])
    await _enrol(client, "moved-in", "vestbjerg", days[2])
    await _enrol(client, "moved-away", "vestbjerg", date(2026, 8, 10), days[1])
    await _enrol(client, "moved-away", "lind", days[2])
    items = [registration("late", d) for d in days]
    for pupil, before, after in (
        ("moved-in", "lind", "vestbjerg"),
        ("moved-away", "vestbjerg", "lind"),
    ):
        items += [registration(pupil, d, school=before if d < days[2] else after) for d in days]
    r = await client.post("/v1/registrations/batch", json={"items": items}, headers=BOTH)
    assert r.json()["inserted"] == 15, r.text
    body = {
        "pack": copy.deepcopy(LOCAL) | {"id": "aalborg-strict"},
        "replaces": "dk-aalborg-2018",
        "first_day": "2026-08-10",
        "last_day": "2026-11-20",
    }

    r = await client.post(f"{BASE}/dry-run", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["schools"], out["pupils_evaluated"]) == (["vestbjerg"], 3)
    found = {
        (side, c["pupil_id"], c["school_id"], c["rule_id"], c["crossing_date"])
        for side in ("added", "removed")
        for c in out[f"concerns_{side}"]
    }
    assert found == {
        # Three of the late pupil's days: consecutive-3 on the third, never consecutive-5.
        ("added", "late", "vestbjerg", "consecutive-3", days[4].isoformat()),
        # Two days at Lind and three here make five in a row, judged here from the move on.
        ("added", "moved-in", "vestbjerg", "consecutive-3", days[2].isoformat()),
        ("removed", "moved-in", "vestbjerg", "consecutive-5", days[4].isoformat()),
        # The pupil who moved away crosses on days at Lind, whose packs do not change.
    }


async def test_dry_run_refuses_bad_requests_naming_the_field(client: httpx.AsyncClient) -> None:
    await configure(client)
    bad_pack = copy.deepcopy(LOCAL) | {"id": "x"}
    bad_pack["versions"][0]["rules"][0]["n"] = 0
    r = await client.post(
        f"{BASE}/dry-run",
        json={
            "pack": bad_pack,
            "replaces": "dk-national",
            "first_day": "2026-11-01",
            "last_day": "2026-10-01",
        },
    )
    assert r.status_code == 422
    # dk-national is in force at no school of Aalborg: named with the rest.
    assert fields(r) == {"pack.versions[0].rules[0].n", "last_day", "replaces"}
    # Schema errors (a date that is not one, an unknown field) come with the domain's.
    r = await client.post(
        f"{BASE}/dry-run",
        json={
            "pack": bad_pack,
            "replaces": "dk-national",
            "first_day": "the first",
            "last_day": "2026-10-01",
            "extra": 1,
        },
    )
    assert r.status_code == 422
    assert fields(r) == {"pack.versions[0].rules[0].n", "first_day", "extra", "replaces"}
    r = await client.post(
        f"{BASE}/dry-run",
        json={
            "pack": LOCAL | {"id": "x"},
            "replaces": "dk-national",
            "first_day": "2026-09-01",
            "last_day": "2026-10-01",
        },
    )
    assert r.status_code == 422 and fields(r) == {"replaces"}
