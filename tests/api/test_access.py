"""Who may call what: the isolation matrix over every route in the OpenAPI document, with two
municipalities of two schools each, plus the guard that refuses routes without an access rule."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.audit.endpoints import router as audit_router
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.settings import ApiSettings
from opspor_shared.access import MissingAccessRule, allow
from opspor_shared.auth import Role
from tests.api.conftest import api_settings
from tests.api.test_concerns import concern_event
from tests.auth import bearer, local_issuer
from tests.support import SCHOOL_YEAR, YEAR_BODY, registration

MONDAY = date(2026, 9, 21)
PERIOD = "from=2026-09-14&to=2026-09-25"
MUNICIPALITY_OF = {"a1": "aalborg", "a2": "aalborg", "o1": "odense", "o2": "odense"}
PUPIL_OF = {school: f"pupil-{school}" for school in MUNICIPALITY_OF}
SCHOOL_BOUND = {Role.SCHOOL_SYSTEM, Role.SCHOOL_STAFF}
ADMIN, SYSTEM, STAFF, PPR, OPS = (
    Role.MUNICIPALITY_ADMIN,
    Role.SCHOOL_SYSTEM,
    Role.SCHOOL_STAFF,
    Role.PPR,
    Role.OPERATIONS,
)


def concern_id(school: str, level: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"matrix|{school}|{level}")


def municipality_body(m: str) -> dict[str, Any]:
    return {
        "name": f"{m.title()} Kommune",
        "country": "DK",
        "language": "da",
        "rule_packs": ["dk-aalborg-2018"],
        "ppr_mailbox": f"ppr@sikkerpost.{m}.dk",
    }


def school_body(school: str) -> dict[str, Any]:
    return {
        "municipality_id": MUNICIPALITY_OF[school],
        "name": f"Skole {school}",
        "timezone": "Europe/Copenhagen",
        "mailbox": f"{school}@sikkerpost.{MUNICIPALITY_OF[school]}.dk",
    }


def token(role: Role, municipality: str = "aalborg", school: str = "a1") -> dict[str, str]:
    return bearer(role, municipality, [school])


async def seed(client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Both municipalities configured through the API; each school has one pupil with one
    registration and a `concern`-level concern; the first school of each municipality also has
    a `ppr-may` concern for its pupil."""
    for school, m in MUNICIPALITY_OF.items():
        admin = token(ADMIN, m)
        r = await client.put(f"/v1/municipalities/{m}", json=municipality_body(m), headers=admin)
        assert r.status_code in (200, 201), r.text
        r = await client.put(f"/v1/schools/{school}", json=school_body(school), headers=admin)
        assert r.status_code == 201, r.text
        r = await client.put(
            f"/v1/schools/{school}/school-years/{SCHOOL_YEAR}", json=YEAR_BODY, headers=admin
        )
        assert r.status_code == 201, r.text
        r = await client.post(
            "/v1/registrations",
            json=registration(PUPIL_OF[school], MONDAY, school=school),
            headers=token(SYSTEM, m, school),
        )
        assert r.status_code == 201, r.text
    rows = []
    for school, m in MUNICIPALITY_OF.items():
        levels = ["concern", "ppr-may"] if school.endswith("1") else ["concern"]
        for level in levels:
            rows.append(
                {
                    "concern_id": concern_id(school, level),
                    "revision": 1,
                    "status": "active",
                    "pupil_id": PUPIL_OF[school],
                    "school_id": school,
                    "municipality_id": m,
                    "level": level,
                    "crossing_date": MONDAY,
                    "pack_id": "dk-aalborg-2018",
                    "rule_id": f"rule-{level}",
                    "rule_version": "1",
                    "explanation": concern_event(PUPIL_OF[school], MONDAY).data["explanation"]
                    | {"summary": f"secret explanation of {school}"},
                }
            )
    async with sessionmaker() as session, session.begin():
        await ConcernRepository(session).apply(rows)
    # A case per school, opened by its staff; the first school's is referred to PPR.
    for school, m in MUNICIPALITY_OF.items():
        staff = token(STAFF, m, school)
        r = await client.post(
            f"/v1/schools/{school}/cases",
            json={"pupil_id": PUPIL_OF[school], "source": "absence-data"},
            headers=staff,
        )
        assert r.status_code == 201, r.text
        CASE_OF[school] = r.json()["id"]
        if school.endswith("1"):
            referral = {"kind": "referral", "to": "ppr", "type": "consulted", "on": "2026-09-21"}
            r = await client.post(
                f"/v1/cases/{CASE_OF[school]}/entries",
                json=referral,
                headers=staff | {"If-Match": r.headers["etag"]},
            )
            assert r.status_code == 201, r.text


PACK: dict[str, Any] = {
    "name": "Lokal",
    "source": "test",
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
HOOK = {
    "url": "https://sager.example.org/opspor",
    "secret": "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
}

# (method, url, body) or (method, url, body, extra headers)
Request = tuple[str, str, Any] | tuple[str, str, Any, dict[str, str]]
CASE_OF: dict[str, str] = {}
CASE_MODEL: dict[str, Any] = {
    "version": "1",
    "source": "test",
    "name": {"da": "Egen", "nb": "Egen", "en": "Own"},
    "outcomes": ["back-in-class"],
    "phases": [
        {"id": "a", "name": {"da": "a", "nb": "a", "en": "a"}, "responsible": "class-team"},
        {"id": "z", "name": {"da": "z", "nb": "z", "en": "z"}, "responsible": "school-leader"},
    ],
}
ANY_VERSION = {"If-Match": "*"}
Build = Callable[[str, str], Request]  # (school, level) -> (method, url, body)


@dataclass(frozen=True)
class Case:
    roles: frozenset[Role]
    build: Build
    # The answer to a request about another tenant's school or pupil.
    foreign_status: int | None = 404


def case(roles: set[Role], build: Build, foreign_status: int | None = 404) -> Case:
    return Case(frozenset(roles), build, foreign_status)


def _reg(school: str, _level: str) -> Request:
    return ("POST", "/v1/registrations", registration(PUPIL_OF[school], MONDAY, school=school))


def _batch(school: str, _level: str) -> Request:
    items = [registration(PUPIL_OF[school], MONDAY + timedelta(days=1), school=school)]
    return ("POST", "/v1/registrations/batch", {"items": items})


def _retract(school: str, _level: str) -> Request:
    body = {
        "event_id": uuid.uuid4().hex,
        "pupil_id": PUPIL_OF[school],
        "school_id": school,
        "date": (MONDAY + timedelta(days=2)).isoformat(),
        "slot": "day",
        "recorded_at": "2026-09-23T09:00:00+02:00",
    }
    return ("POST", "/v1/registrations/retractions", body)


# Every route of the API, with the roles that may use it. A route missing here fails the test.
EXPECTED: dict[tuple[str, str], Case] = {
    ("GET", "/healthz"): case(set(Role), lambda s, lv: ("GET", "/healthz", None), None),
    ("GET", "/readyz"): case(set(Role), lambda s, lv: ("GET", "/readyz", None), None),
    ("GET", "/metrics"): case({OPS}, lambda s, lv: ("GET", "/metrics", None), None),
    # Dead letters: operations only, ids only; an unknown topic answers 404 (no tenancy).
    ("GET", "/v1/operations/dead-letters"): case(
        {OPS}, lambda s, lv: ("GET", "/v1/operations/dead-letters", None), None
    ),
    ("GET", "/v1/operations/dead-letters/{topic}"): case(
        {OPS}, lambda s, lv: ("GET", "/v1/operations/dead-letters/CONCERNS_TOPIC", None), None
    ),
    ("POST", "/v1/operations/dead-letters/{topic}/redrive"): case(
        {OPS},
        lambda s, lv: (
            "POST",
            "/v1/operations/dead-letters/CONCERNS_TOPIC/redrive",
            {"all": True},
        ),
        None,
    ),
    ("PUT", "/v1/municipalities/{municipality_id}"): case(
        {ADMIN},
        lambda s, lv: (
            "PUT",
            f"/v1/municipalities/{MUNICIPALITY_OF[s]}",
            municipality_body(MUNICIPALITY_OF[s]),
        ),
    ),
    ("GET", "/v1/municipalities/{municipality_id}"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}", None)
    ),
    ("PUT", "/v1/schools/{school_id}"): case(
        {ADMIN}, lambda s, lv: ("PUT", f"/v1/schools/{s}", school_body(s))
    ),
    ("GET", "/v1/schools/{school_id}"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}", None)
    ),
    ("PUT", "/v1/schools/{school_id}/school-years/{label}"): case(
        {ADMIN},
        lambda s, lv: ("PUT", f"/v1/schools/{s}/school-years/{SCHOOL_YEAR}", YEAR_BODY),
    ),
    ("GET", "/v1/schools/{school_id}/school-years/{label}"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}/school-years/{SCHOOL_YEAR}", None)
    ),
    ("GET", "/v1/schools/{school_id}/school-years"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}/school-years", None)
    ),
    ("GET", "/v1/rule-packs"): case(
        {ADMIN, STAFF, PPR}, lambda s, lv: ("GET", "/v1/rule-packs", None), None
    ),
    ("POST", "/v1/registrations"): case({SYSTEM}, _reg, 422),
    ("POST", "/v1/registrations/batch"): case({SYSTEM}, _batch, 422),
    ("POST", "/v1/registrations/retractions"): case({SYSTEM}, _retract, 422),
    ("GET", "/v1/pupils/{pupil_id}/registrations"): case(
        {SYSTEM, STAFF}, lambda s, lv: ("GET", f"/v1/pupils/{PUPIL_OF[s]}/registrations", None)
    ),
    ("GET", "/v1/pupils/{pupil_id}/concerns"): case(
        {STAFF, PPR}, lambda s, lv: ("GET", f"/v1/pupils/{PUPIL_OF[s]}/concerns", None)
    ),
    ("GET", "/v1/schools/{school_id}/concerns"): case(
        {STAFF, PPR}, lambda s, lv: ("GET", f"/v1/schools/{s}/concerns", None)
    ),
    ("GET", "/v1/concerns/{concern_id}"): case(
        {STAFF, PPR}, lambda s, lv: ("GET", f"/v1/concerns/{concern_id(s, lv)}", None)
    ),
    ("GET", "/v1/pupils/{pupil_id}/access-log"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/pupils/{PUPIL_OF[s]}/access-log", None)
    ),
    ("GET", "/v1/rule-packs/{pack_id}"): case(
        {ADMIN, STAFF, PPR}, lambda s, lv: ("GET", "/v1/rule-packs/dk-national", None), None
    ),
    ("PUT", "/v1/municipalities/{municipality_id}/rule-packs/{pack_id}"): case(
        {ADMIN},
        lambda s, lv: ("PUT", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/rule-packs/lokal", PACK),
    ),
    ("GET", "/v1/municipalities/{municipality_id}/rule-packs"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/rule-packs", None)
    ),
    ("GET", "/v1/municipalities/{municipality_id}/rule-packs/{pack_id}"): case(
        {ADMIN},
        lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/rule-packs/lokal", None),
    ),
    ("POST", "/v1/municipalities/{municipality_id}/rule-packs/dry-run"): case(
        {ADMIN},
        lambda s, lv: (
            "POST",
            f"/v1/municipalities/{MUNICIPALITY_OF[s]}/rule-packs/dry-run",
            {"pack": PACK | {"id": "lokal"}, "first_day": "2026-08-10", "last_day": "2026-11-20"},
        ),
    ),
    ("PUT", "/v1/schools/{school_id}/enrolments/{pupil_id}"): case(
        {SYSTEM},
        lambda s, lv: (
            "PUT",
            f"/v1/schools/{s}/enrolments/{PUPIL_OF[s]}",
            {
                "event_id": uuid.uuid4().hex,
                "enrolled_from": "2026-08-10",
                "recorded_at": "2026-08-10T08:00:00+02:00",
            },
        ),
    ),
    ("GET", "/v1/pupils/{pupil_id}/enrolments"): case(
        {SYSTEM, STAFF}, lambda s, lv: ("GET", f"/v1/pupils/{PUPIL_OF[s]}/enrolments", None)
    ),
    ("POST", "/v1/schools/{school_id}/register-complete"): case(
        {SYSTEM},
        lambda s, lv: (
            "POST",
            f"/v1/schools/{s}/register-complete",
            {"date": MONDAY.isoformat(), "class_id": "7a"},
        ),
    ),
    ("GET", "/v1/schools/{school_id}/completeness"): case(
        {SYSTEM, STAFF, ADMIN},
        lambda s, lv: ("GET", f"/v1/schools/{s}/completeness?from=2026-09-14&to=2026-09-25", None),
    ),
    ("PUT", "/v1/municipalities/{municipality_id}/webhooks/{webhook_id}"): case(
        {ADMIN},
        lambda s, lv: ("PUT", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/webhooks/sager", HOOK),
    ),
    ("GET", "/v1/municipalities/{municipality_id}/webhooks/{webhook_id}"): case(
        {ADMIN},
        lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/webhooks/sager", None),
    ),
    ("GET", "/v1/municipalities/{municipality_id}/webhooks"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/webhooks", None)
    ),
    # Reports: aggregates for the school's staff and the municipality's administrator;
    # reports naming pupils for the school's staff only; roll-ups for the administrator.
    ("GET", "/v1/schools/{school_id}/reports/absence"): case(
        {STAFF, ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}/reports/absence?{PERIOD}", None)
    ),
    ("GET", "/v1/schools/{school_id}/reports/patterns"): case(
        {STAFF, ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}/reports/patterns?{PERIOD}", None)
    ),
    ("GET", "/v1/schools/{school_id}/reports/baerum"): case(
        {STAFF, ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}/reports/baerum", None)
    ),
    ("GET", "/v1/schools/{school_id}/reports/open-concerns"): case(
        {STAFF}, lambda s, lv: ("GET", f"/v1/schools/{s}/reports/open-concerns", None)
    ),
    ("GET", "/v1/schools/{school_id}/reports/close-to-limit"): case(
        {STAFF}, lambda s, lv: ("GET", f"/v1/schools/{s}/reports/close-to-limit", None)
    ),
    ("GET", "/v1/municipalities/{municipality_id}/reports/absence"): case(
        {ADMIN},
        lambda s, lv: (
            "GET",
            f"/v1/municipalities/{MUNICIPALITY_OF[s]}/reports/absence?{PERIOD}",
            None,
        ),
    ),
    ("GET", "/v1/municipalities/{municipality_id}/reports/patterns"): case(
        {ADMIN},
        lambda s, lv: (
            "GET",
            f"/v1/municipalities/{MUNICIPALITY_OF[s]}/reports/patterns?{PERIOD}",
            None,
        ),
    ),
    ("GET", "/v1/municipalities/{municipality_id}/reports/open-concerns"): case(
        {ADMIN},
        lambda s, lv: (
            "GET",
            f"/v1/municipalities/{MUNICIPALITY_OF[s]}/reports/open-concerns",
            None,
        ),
    ),
    ("GET", "/v1/municipalities/{municipality_id}/reports/baerum"): case(
        {ADMIN},
        lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/reports/baerum", None),
    ),
    ("GET", "/v1/schools/{school_id}/reports/cases"): case(
        {STAFF, ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}/reports/cases", None)
    ),
    ("GET", "/v1/municipalities/{municipality_id}/reports/cases"): case(
        {ADMIN},
        lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/reports/cases", None),
    ),
    ("PUT", "/v1/municipalities/{municipality_id}/routing"): case(
        {ADMIN},
        lambda s, lv: (
            "PUT",
            f"/v1/municipalities/{MUNICIPALITY_OF[s]}/routing",
            {"levels": {"concern": [{"to": "school"}]}},
        ),
    ),
    ("GET", "/v1/municipalities/{municipality_id}/routing"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/routing", None)
    ),
    ("PUT", "/v1/schools/{school_id}/routing"): case(
        {ADMIN},
        lambda s, lv: (
            "PUT",
            f"/v1/schools/{s}/routing",
            {"levels": {"concern": [{"to": "mailbox", "address": "leder@skole.dk"}]}},
        ),
    ),
    ("GET", "/v1/schools/{school_id}/routing"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}/routing", None)
    ),
    ("DELETE", "/v1/schools/{school_id}/routing"): case(
        {ADMIN}, lambda s, lv: ("DELETE", f"/v1/schools/{s}/routing", None)
    ),
    ("PUT", "/v1/concerns/{concern_id}/acknowledgement"): case(
        {STAFF, PPR},
        lambda s, lv: ("PUT", f"/v1/concerns/{concern_id(s, lv)}/acknowledgement", {"as": "seen"}),
    ),
    # Cases: staff work them at their schools, PPR those referred or brought for consultation
    # to it (a1's case), the municipality reads metadata.
    ("GET", "/v1/case-models"): case(
        {ADMIN, STAFF, PPR}, lambda s, lv: ("GET", "/v1/case-models", None), None
    ),
    ("GET", "/v1/case-models/{model_id}"): case(
        {ADMIN, STAFF, PPR}, lambda s, lv: ("GET", "/v1/case-models/baerum", None), None
    ),
    ("PUT", "/v1/municipalities/{municipality_id}/case-models/{model_id}"): case(
        {ADMIN},
        lambda s, lv: (
            "PUT",
            f"/v1/municipalities/{MUNICIPALITY_OF[s]}/case-models/own",
            CASE_MODEL,
        ),
    ),
    ("GET", "/v1/municipalities/{municipality_id}/case-models"): case(
        {ADMIN}, lambda s, lv: ("GET", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/case-models", None)
    ),
    ("POST", "/v1/schools/{school_id}/cases"): case(
        {STAFF},
        lambda s, lv: (
            "POST",
            f"/v1/schools/{s}/cases",
            {"pupil_id": f"new-{s}", "source": "team"},
        ),
    ),
    ("GET", "/v1/cases/{case_id}"): case(
        {STAFF, PPR, ADMIN}, lambda s, lv: ("GET", f"/v1/cases/{CASE_OF[s]}", None)
    ),
    ("POST", "/v1/cases/{case_id}/entries"): case(
        {STAFF, PPR},
        lambda s, lv: (
            "POST",
            f"/v1/cases/{CASE_OF[s]}/entries",
            {"kind": "cause", "category": "school"},
            ANY_VERSION,
        ),
    ),
    ("POST", "/v1/cases/{case_id}/transitions"): case(
        {STAFF},
        lambda s, lv: (
            "POST",
            f"/v1/cases/{CASE_OF[s]}/transitions",
            {"to": "resource-team"},
            ANY_VERSION,
        ),
    ),
    ("GET", "/v1/pupils/{pupil_id}/cases"): case(
        {STAFF, PPR, ADMIN}, lambda s, lv: ("GET", f"/v1/pupils/{PUPIL_OF[s]}/cases", None)
    ),
    ("GET", "/v1/schools/{school_id}/cases"): case(
        {STAFF, PPR, ADMIN}, lambda s, lv: ("GET", f"/v1/schools/{s}/cases", None)
    ),
    ("DELETE", "/v1/municipalities/{municipality_id}/webhooks/{webhook_id}"): case(
        {ADMIN},
        lambda s, lv: ("DELETE", f"/v1/municipalities/{MUNICIPALITY_OF[s]}/webhooks/sager", None),
    ),
}


def foreign_targets(role: Role, route: tuple[str, str]) -> list[tuple[str, str]]:
    """(school, level) pairs outside the tenancy of a token for municipality aalborg, school a1."""
    level = "ppr-may" if role is PPR else "concern"
    targets = [("o1", level), ("o2", level)]
    if role in SCHOOL_BOUND:
        targets.append(("a2", level))
    if role is PPR and route[1] in (
        "/v1/concerns/{concern_id}",
        "/v1/concerns/{concern_id}/acknowledgement",
        "/v1/pupils/{pupil_id}/concerns",
    ):
        # PPR sees PPR-level concerns only: a2's pupil has nothing at a PPR level.
        targets += [("a1", "concern")] if "{concern_id}" in route[1] else [("a2", "concern")]
    return targets


def _without_instance(r: httpx.Response) -> str:
    """The answer without the problem's `instance`, which echoes the path the caller sent."""
    body = r.json()
    return json.dumps(body | {"instance": None} if isinstance(body, dict) else body)


def reveals(body: str, school: str) -> list[str]:
    """Seeded values of the foreign school that must never appear in an answer."""
    secrets = [
        f"Skole {school}",
        f"{school}@sikkerpost",
        f"secret explanation of {school}",
        "rule-",
        "ppr@sikkerpost",
        MONDAY.isoformat(),
    ]
    return [s for s in secrets if s in body]


async def test_every_route_admits_only_its_roles_and_no_cross_tenant_request_succeeds(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await seed(client, sessionmaker)
    app = create_app(settings)
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert documented == set(EXPECTED), (
        f"routes without an expectation: {sorted(documented - set(EXPECTED))}; "
        f"expectations without a route: {sorted(set(EXPECTED) - documented)}"
    )
    failures: list[str] = []
    for route, expectation in EXPECTED.items():
        for role in Role:
            own = expectation.build("a1", "ppr-may" if role is PPR else "concern")
            method, url, body, *extra = own
            # Topic names carry the test's suffix (tests/api/conftest.py).
            url = url.replace("CONCERNS_TOPIC", settings.concerns_topic)
            headers = token(role) | (extra[0] if extra else {})
            r = await client.request(method, url, json=body, headers=headers)
            allowed = role in expectation.roles
            if allowed and not 200 <= r.status_code < 300:
                failures.append(f"{role} {method} {url}: {r.status_code} {r.text[:200]}")
            if not allowed and r.status_code != 403:
                failures.append(f"{role} {method} {url}: expected 403, got {r.status_code}")
            # The instance member echoes the path the caller sent; nothing else may name data.
            if not allowed and "pupil-" in json.dumps(r.json() | {"instance": None}):
                failures.append(f"{role} {method} {url}: a 403 names a pupil")
            if not allowed or expectation.foreign_status is None:
                continue
            for school, level in foreign_targets(role, route):
                method, url, body, *extra = expectation.build(school, level)
                headers = token(role) | (extra[0] if extra else {})
                r = await client.request(method, url, json=body, headers=headers)
                if r.status_code != expectation.foreign_status:
                    failures.append(
                        f"{role} {method} {url} (foreign {school}/{level}): "
                        f"expected {expectation.foreign_status}, got {r.status_code} {r.text[:200]}"
                    )
                elif leaked := reveals(_without_instance(r), school):
                    failures.append(f"{role} {method} {url}: the answer reveals {leaked}")
    assert not failures, "\n".join(failures)


async def test_a_foreign_pupil_or_school_answers_exactly_like_an_unknown_one(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed(client, sessionmaker)
    staff = token(STAFF)
    for template in (
        "/v1/pupils/{}/concerns",
        "/v1/pupils/{}/registrations",
    ):
        foreign = await client.get(template.format(PUPIL_OF["o1"]), headers=staff)
        unknown = await client.get(template.format("pupil-zz"), headers=staff)
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.text.replace(PUPIL_OF["o1"], "X") == unknown.text.replace("pupil-zz", "X")
    foreign = await client.get(f"/v1/concerns/{concern_id('o1', 'concern')}", headers=staff)
    unknown = await client.get(f"/v1/concerns/{uuid.UUID(int=7)}", headers=staff)
    assert json.loads(foreign.text)["title"] == json.loads(unknown.text)["title"]
    assert foreign.status_code == unknown.status_code == 404
    # A registration for another tenant's school gets the same 422 as an unknown school.
    system = token(SYSTEM)
    foreign = await client.post(
        "/v1/registrations", json=registration("p-new", MONDAY, school="o1"), headers=system
    )
    unknown = await client.post(
        "/v1/registrations", json=registration("p-new", MONDAY, school="zz"), headers=system
    )
    assert foreign.status_code == unknown.status_code == 422
    assert foreign.json()["errors"][0]["detail"].replace("o1", "X") == unknown.json()["errors"][0][
        "detail"
    ].replace("zz", "X")


async def test_a_school_token_of_another_municipality_does_not_reach_the_school(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The schools table, not the token, says which municipality a school belongs to."""
    await seed(client, sessionmaker)
    mixed = bearer(STAFF, "aalborg", ["a1", "o1"])
    assert (await client.get("/v1/schools/o1/concerns", headers=mixed)).status_code == 404
    own = await client.get("/v1/schools/a1/concerns", headers=mixed)
    assert own.status_code == 200 and len(own.json()["items"]) == 2


async def test_ppr_sees_only_ppr_levels_of_its_municipality_by_default(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed(client, sessionmaker)
    ppr = token(PPR)
    page = (await client.get("/v1/schools/a1/concerns", headers=ppr)).json()
    assert [c["level"] for c in page["items"]] == ["ppr-may"]
    pupil = (await client.get(f"/v1/pupils/{PUPIL_OF['a1']}/concerns", headers=ppr)).json()
    assert [c["level"] for c in pupil] == ["ppr-may"]
    # Asking for the non-PPR level explicitly changes nothing.
    page = (await client.get("/v1/schools/a1/concerns?level=concern", headers=ppr)).json()
    assert page["items"] == []


async def test_ppr_sees_the_concerns_routed_to_it_as_routing_changes(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """DOMAIN.md s.9: what PPR reads follows the routing the mails follow, not fixed levels:
    the municipality's routing, a school's own overriding it, `*` for the levels not named."""
    await seed(client, sessionmaker)
    ppr, admin = token(PPR), token(ADMIN)

    async def seen(school: str) -> list[str]:
        page = await client.get(f"/v1/schools/{school}/concerns", headers=ppr)
        assert page.status_code == 200, page.text
        return sorted(c["level"] for c in page.json()["items"])

    async def opens(school: str, level: str) -> int:
        r = await client.get(f"/v1/concerns/{concern_id(school, level)}", headers=ppr)
        return r.status_code

    # The municipality sends every level it does not name (`concern` among them) to PPR as
    # well, and ppr-may to the school only.
    routing = {
        "levels": {
            "*": [{"to": "school"}, {"to": "ppr"}],
            "ppr-may": [{"to": "school"}],
        }
    }
    r = await client.put("/v1/municipalities/aalborg/routing", json=routing, headers=admin)
    assert r.status_code == 200, r.text
    assert await seen("a1") == ["concern"] and await seen("a2") == ["concern"]
    assert await opens("a1", "concern") == 200 and await opens("a1", "ppr-may") == 404
    pupil = await client.get(f"/v1/pupils/{PUPIL_OF['a2']}/concerns", headers=ppr)
    assert [c["level"] for c in pupil.json()] == ["concern"]

    # a1's own routing, level by level, overrides the municipality's; a2 keeps that.
    own = {"levels": {"ppr-may": [{"to": "ppr"}], "concern": [{"to": "school"}]}}
    r = await client.put("/v1/schools/a1/routing", json=own, headers=admin)
    assert r.status_code == 200, r.text
    assert await seen("a1") == ["ppr-may"] and await seen("a2") == ["concern"]
    assert await opens("a1", "concern") == 404 and await opens("a1", "ppr-may") == 200

    # Without the school's routing, a1 follows the municipality's again; another
    # municipality's concerns stay out of reach whatever its routing says.
    assert (await client.delete("/v1/schools/a1/routing", headers=admin)).status_code == 204
    assert await seen("a1") == ["concern"]
    assert await opens("o1", "concern") == 404


async def test_no_token_is_401_and_a_bad_token_never_echoes(
    client: httpx.AsyncClient,
) -> None:
    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://api")
    r = await anonymous.get("/v1/rule-packs")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"] == "application/problem+json"
    valid = bearer(STAFF)["Authorization"].removeprefix("Bearer ")
    forged = valid[:-6] + ("AAAAAA" if not valid.endswith("AAAAAA") else "BBBBBB")
    with structlog.testing.capture_logs() as logs:
        r = await anonymous.get("/v1/rule-packs", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    assert "signature" in r.json()["detail"]
    header, payload, _ = forged.split(".")
    for part in (forged, header, payload, forged.split(".")[2]):
        assert part not in r.text
        assert part not in json.dumps(logs, default=str)
    # Health and readiness stay open for orchestrators; the OpenAPI document too.
    assert (await anonymous.get("/healthz")).status_code == 200
    assert (await anonymous.get("/openapi.json")).status_code == 200
    await anonymous.aclose()


async def test_unauthenticated_error_bodies_never_carry_the_token_even_when_logged(
    client: httpx.AsyncClient,
) -> None:
    """An expired token is refused with a reason, never with the token."""
    expired = local_issuer().mint(STAFF, municipality="aalborg", schools=["a1"], ttl_seconds=-120)
    with structlog.testing.capture_logs() as logs:
        r = await client.get("/v1/rule-packs", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json()["detail"] == "the token has expired"
    assert expired not in r.text and expired not in json.dumps(logs, default=str)


async def test_a_token_pasted_with_its_bearer_prefix_is_refused_with_what_went_wrong(
    client: httpx.AsyncClient,
) -> None:
    """The docs page's Authorize adds "Bearer " itself; a pasted "Bearer eyJ..." doubles it."""
    header = bearer(STAFF)["Authorization"]
    token_only = header.removeprefix("Bearer ")
    for doubled in (f"Bearer {header}", f"Bearer bearer {token_only}"):
        r = await client.get("/v1/rule-packs", headers={"Authorization": doubled})
        assert r.status_code == 401
        assert r.json()["detail"] == "the token starts with 'Bearer ': paste the token alone"
        assert token_only not in r.text
    # The same token sent once is accepted.
    assert (
        await client.get("/v1/rule-packs", headers={"Authorization": header})
    ).status_code == 200


def test_a_route_without_an_access_rule_makes_create_app_fail(
    settings: ApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    careless = APIRouter(prefix="/v1")

    @careless.get("/pupils/{pupil_id}/everything")
    async def everything(pupil_id: str) -> dict[str, str]:
        return {"pupil_id": pupil_id}

    ruled = APIRouter(prefix="/v1")

    @ruled.get("/pupils/{pupil_id}/ruled", dependencies=[allow(Role.SCHOOL_STAFF)])
    async def ruled_route(pupil_id: str) -> dict[str, str]:
        return {"pupil_id": pupil_id}

    original = FastAPI.include_router

    def include_also(extra: APIRouter) -> Any:
        def include(self: Any, router: APIRouter, **kwargs: Any) -> None:
            original(self, router, **kwargs)
            if router is audit_router:
                original(self, extra)

        return include

    monkeypatch.setattr(FastAPI, "include_router", include_also(ruled))
    create_app(settings)  # a route with a rule is fine
    monkeypatch.setattr(FastAPI, "include_router", include_also(careless))
    with pytest.raises(MissingAccessRule, match=r"GET /v1/pupils/\{pupil_id\}/everything"):
        create_app(settings)


def test_a_service_refuses_to_start_without_an_issuer(settings: ApiSettings) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="auth_issuers"):
        api_settings(settings.database_url, "x:1", "t", auth_issuers=[])
