from __future__ import annotations

import httpx

from opspor_shared.auth import Role
from tests.auth import bearer
from tests.support import SCHOOL_YEAR, YEAR_BODY, configure

MUNICIPALITY = {
    "name": "Aalborg Kommune",
    "country": "DK",
    "language": "da",
    "rule_packs": ["dk-aalborg-2018"],
    # The pack's PPR levels must reach someone (routing, issue 9); dk-national's
    # notify-municipality goes to the unit.
    "ppr_mailbox": "ppr@sikkerpost.aalborg.dk",
    "unit_mailbox": "skoleforvaltning@sikkerpost.aalborg.dk",
}


def fields(response: httpx.Response) -> set[str]:
    assert response.headers["content-type"] == "application/problem+json"
    return {e["field"] for e in response.json()["errors"]}


async def test_municipality_is_created_then_updated(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/municipalities/aalborg", json=MUNICIPALITY)
    assert r.status_code == 201
    r = await client.put("/v1/municipalities/aalborg", json=MUNICIPALITY | {"name": "Aalborg"})
    assert r.status_code == 200
    assert (await client.get("/v1/municipalities/aalborg")).json()["name"] == "Aalborg"


async def test_bad_municipality_names_every_bad_field(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/v1/municipalities/aalborg",
        json=MUNICIPALITY | {"country": "XX", "ppr_mailbox": "not-an-address", "extra": 1},
    )
    assert r.status_code == 422
    assert fields(r) == {"country", "ppr_mailbox", "extra"}
    assert (await client.get("/v1/municipalities/aalborg")).status_code == 404


async def test_unknown_rule_pack_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/v1/municipalities/aalborg",
        json=MUNICIPALITY | {"rule_packs": ["dk-national", "nope", "dk-national"]},
    )
    assert r.status_code == 422
    assert fields(r) == {"rule_packs[1]", "rule_packs[2]"}
    assert "dk-aalborg-2018" in r.json()["errors"][0]["detail"]


async def test_school_needs_a_known_municipality_and_a_real_time_zone(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "municipality_id": "aalborg",
        "name": "Vestbjerg Skole",
        "timezone": "Europe/Aalborg",
        "mailbox": "skole@sikkerpost.aalborg.dk",
    }
    r = await client.put("/v1/schools/vestbjerg", json=body)
    assert r.status_code == 422
    assert fields(r) == {"timezone", "municipality_id"}  # both at once
    r = await client.put("/v1/schools/vestbjerg", json=body | {"timezone": "Europe/Copenhagen"})
    assert r.status_code == 422
    assert fields(r) == {"municipality_id"}


async def test_school_inherits_country_language_and_pack(client: httpx.AsyncClient) -> None:
    await configure(client)
    school = (await client.get("/v1/schools/vestbjerg")).json()
    assert school["country"] == "DK"
    assert school["language"] == "da"
    assert school["rule_packs"] is None
    assert school["effective_rule_packs"] == ["dk-aalborg-2018"]


async def test_school_year_counts_school_days(client: httpx.AsyncClient) -> None:
    await configure(client)
    # Mon 2 Nov - Fri 13 Nov 2026: 10 weekdays, 2 closed, plus one extra Saturday.
    body = {
        "first_day": "2026-11-02",
        "last_day": "2026-11-13",
        "closures": [{"first_day": "2026-11-09", "last_day": "2026-11-10", "reason": "planning"}],
        "extra_days": ["2026-11-07"],
    }
    oslo = bearer(Role.MUNICIPALITY_ADMIN, "oslo")
    await client.put("/v1/municipalities/oslo", json=MUNICIPALITY | {"country": "NO"}, headers=oslo)
    await client.put(
        "/v1/schools/short",
        headers=oslo,
        json={
            "municipality_id": "oslo",
            "name": "Short",
            "timezone": "Europe/Oslo",
            "mailbox": "s@sikkerpost.oslo.no",
        },
    )
    r = await client.put("/v1/schools/short/school-years/2026-2027", json=body, headers=oslo)
    assert r.status_code == 201, r.text
    assert r.json()["school_days"] == 9


async def test_school_year_lists_public_holidays(client: httpx.AsyncClient) -> None:
    await configure(client)
    year = (await client.get(f"/v1/schools/vestbjerg/school-years/{SCHOOL_YEAR}")).json()
    holidays = {h["date"]: h["reason"] for h in year["public_holidays"]}
    assert holidays["2027-03-25"] == "Skærtorsdag"  # Maundy Thursday 2027


async def test_holiday_names_answer_in_the_municipalitys_language(
    client: httpx.AsyncClient,
) -> None:
    """The `holidays` package has Danish and English names for Denmark, Norwegian and English
    for Norway: each school year answers in the school's (else its municipality's) language."""
    await configure(client, language="en")
    year = (await client.get(f"/v1/schools/vestbjerg/school-years/{SCHOOL_YEAR}")).json()
    holidays = {h["date"]: h["reason"] for h in year["public_holidays"]}
    assert holidays["2027-03-25"] == "Maundy Thursday"
    oslo = bearer(Role.MUNICIPALITY_ADMIN, "oslo")
    r = await client.put(
        "/v1/municipalities/oslo",
        json=MUNICIPALITY | {"name": "Oslo kommune", "country": "NO", "language": "nb"},
        headers=oslo,
    )
    assert r.status_code == 201, r.text
    r = await client.put(
        "/v1/schools/majorstuen",
        json={
            "municipality_id": "oslo",
            "name": "Majorstuen skole",
            "timezone": "Europe/Oslo",
            "mailbox": "majorstuen@oslo.kommune.no",
        },
        headers=oslo,
    )
    assert r.status_code == 201, r.text
    r = await client.put(
        f"/v1/schools/majorstuen/school-years/{SCHOOL_YEAR}", json=YEAR_BODY, headers=oslo
    )
    assert r.status_code == 201, r.text
    holidays = {h["date"]: h["reason"] for h in r.json()["public_holidays"]}
    # 2027: Whit Monday falls on Constitution Day.
    assert holidays["2027-03-25"] == "Skjærtorsdag"
    assert holidays["2027-05-17"] == "Andre pinsedag; Grunnlovsdag"


async def test_invalid_school_year_is_refused_whole(client: httpx.AsyncClient) -> None:
    await configure(client)
    bad = YEAR_BODY | {
        "first_day": "2027-06-01",
        "last_day": "2028-07-20",
        "closures": [{"first_day": "2026-01-01", "last_day": "2026-01-02", "reason": "x"}],
    }
    r = await client.put("/v1/schools/vestbjerg/school-years/2027-2028", json=bad)
    assert r.status_code == 422
    assert fields(r) == {"first_day", "closures[0]", "last_day"}
    assert (await client.get("/v1/schools/vestbjerg/school-years/2027-2028")).status_code == 404


async def test_rule_packs_are_listed(client: httpx.AsyncClient) -> None:
    packs = {p["id"] for p in (await client.get("/v1/rule-packs")).json()}
    assert {"dk-aalborg-2018", "dk-national", "no-loten"} <= packs


async def test_a_school_follows_later_changes_of_its_municipality(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    changed = MUNICIPALITY | {"language": "en", "rule_packs": ["dk-national"]}
    assert (await client.put("/v1/municipalities/aalborg", json=changed)).status_code == 200
    school = (await client.get("/v1/schools/vestbjerg")).json()
    assert (school["language"], school["effective_rule_packs"]) == ("en", ["dk-national"])


async def test_names_that_could_break_a_mail_header_are_refused(
    client: httpx.AsyncClient,
) -> None:
    # Tried from outside: this school name was stored, and names go into a notice's Subject.
    await configure(client)
    r = await client.put(
        "/v1/municipalities/aalborg", json=MUNICIPALITY | {"name": "Aalborg\rKommune"}
    )
    assert r.status_code == 422
    assert fields(r) == {"name"}
    school = {
        "municipality_id": "aalborg",
        "name": "Skole\r\nBcc: evil@x.dk",
        "timezone": "Europe/Copenhagen",
        "mailbox": "skole@sikkerpost.aalborg.dk\r\nBcc: evil@x.dk",
    }
    r = await client.put("/v1/schools/vestbjerg", json=school)
    assert r.status_code == 422
    assert fields(r) == {"name", "mailbox"}
    [name_error] = [e for e in r.json()["errors"] if e["field"] == "name"]
    assert "U+000D" in name_error["detail"]
    assert "evil" not in r.text
    # Invisible characters that can disguise a name (a right-to-left override) too.
    r = await client.put("/v1/schools/vestbjerg", json=school | {"name": "Skole \u202eenoj"})
    assert fields(r) == {"name", "mailbox"}
    r = await client.put(
        f"/v1/schools/vestbjerg/school-years/{SCHOOL_YEAR}",
        json=YEAR_BODY
        | {"closures": [{"first_day": "2026-10-12", "last_day": "2026-10-16", "reason": "a\nb"}]},
    )
    assert r.status_code == 422
    assert fields(r) == {"closures[0].reason"}
    # Nothing changed: the school keeps the name it had.
    assert (await client.get("/v1/schools/vestbjerg")).json()["name"] == "Vestbjerg Skole"


async def test_configuration_names_schema_and_domain_errors_together(
    client: httpx.AsyncClient,
) -> None:
    bad = MUNICIPALITY | {"country": "XX", "rule_packs": ["dk-national", "no-such-pack"]}
    r = await client.put("/v1/municipalities/aalborg", json=bad)
    assert r.status_code == 422
    assert fields(r) == {"country", "rule_packs[1]"}
    assert (await client.get("/v1/municipalities/aalborg")).status_code == 404
    await configure(client)
    school = {
        "municipality_id": "aalborg",
        "name": "Ny Skole",
        "timezone": "Mars/Olympus",
        "rule_packs": ["no-such-pack"],
        "mailbox": "",
    }
    r = await client.put("/v1/schools/ny-skole", json=school)
    assert r.status_code == 422
    assert fields(r) == {"timezone", "rule_packs[0]", "mailbox"}
    r = await client.put("/v1/schools/ny skole", json=school | {"municipality_id": "odense"})
    assert r.status_code == 422
    assert fields(r) == {"path.school_id", "timezone", "municipality_id", "mailbox"}
    assert (await client.get("/v1/schools/ny-skole")).status_code == 404


async def test_a_method_the_path_lacks_is_a_405_whose_allow_lists_every_method_of_the_path(
    client: httpx.AsyncClient,
) -> None:
    r = await client.request("OPTIONS", "/v1/schools/vestbjerg")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, PUT"
    r = await client.delete("/v1/municipalities/aalborg/webhooks/w1")
    assert r.status_code != 405
    r = await client.post("/v1/municipalities/aalborg/webhooks/w1")
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, PUT"
    document = (await client.get("/openapi.json")).json()
    put_school = document["paths"]["/v1/schools/{school_id}"]["put"]
    assert {"400", "405", "422"} <= set(put_school["responses"])


async def test_a_school_year_names_label_and_body_errors_together(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    bad = YEAR_BODY | {"first_day": "not a date", "extra_days": ["2027-13-01"]}
    r = await client.put("/v1/schools/vestbjerg/school-years/2026-2028", json=bad)
    assert r.status_code == 422
    assert fields(r) == {"label", "first_day", "extra_days[0]"}
    r = await client.put("/v1/schools/vestbjerg/school-years/26-27", json=bad)
    assert r.status_code == 422
    assert fields(r) == {"path.label", "first_day", "extra_days[0]"}
    years = (await client.get("/v1/schools/vestbjerg/school-years")).json()
    assert [y["label"] for y in years] == [SCHOOL_YEAR]  # only the one configure() stored
