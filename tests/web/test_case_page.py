"""The case page over HTTP: staff work a case through its forms with the API's rules and
errors (in the reader's language, input kept, nothing stored on a refusal), stale pages and
forged forms are refused, other schools' staff cannot reach it, the municipality sees metadata
only, and every view is audited. test_browser.py works a case from opening to closing in
Chromium."""

from __future__ import annotations

import re
import uuid
from html import unescape

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.models import AuditEntry, Case
from opspor_shared.auth import Role
from tests.api.test_access import PUPIL_OF, concern_id
from tests.auth import bearer
from tests.web.conftest import csrf_of, sign_in

pytestmark = pytest.mark.usefixtures("seeded")


STAFF_A1 = bearer(Role.SCHOOL_STAFF, "aalborg", ["a1"])


async def open_case(web: httpx.AsyncClient, note: str = "Mor ringede") -> str:
    """The case the seed's concern opened for the pupil of school a1, with a note from the
    API (free text) on it."""
    r = await web.get(f"/v1/pupils/{PUPIL_OF['a1']}/cases", headers=STAFF_A1)
    assert r.status_code == 200 and len(r.json()) == 1, r.text
    case = r.json()[0]
    r = await web.post(
        f"/v1/cases/{case['id']}/entries",
        json={"kind": "cause", "category": "family", "note": note},
        headers=STAFF_A1 | {"If-Match": f'"{case["version"]}"'},
    )
    assert r.status_code == 201, r.text
    return str(case["id"])


async def api_case(web: httpx.AsyncClient, case_id: str) -> dict[str, object]:
    r = await web.get(f"/v1/cases/{case_id}", headers=bearer(Role.SCHOOL_STAFF, "aalborg", ["a1"]))
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def version_of(html: str) -> str:
    found = re.search(r'name="version" value="(\d+)"', html)
    assert found, "the page has no case form"
    return found.group(1)


def problems_of(html: str) -> list[str]:
    summary = re.search(r'<div class="error-summary".*?</div>', html, re.S)
    assert summary, "no error summary on the page"
    return [
        re.sub(r"<[^>]+>", "", unescape(item)).strip()
        for item in re.findall(r"<li>(.*?)</li>", summary.group(0), re.S)
    ]


async def post_form(
    web: httpx.AsyncClient, case_id: str, path: str, page: str, **fields: object
) -> httpx.Response:
    data: dict[str, object] = {"csrf_token": csrf_of(page), "version": version_of(page)}
    data |= {k.rstrip("_"): v for k, v in fields.items()}
    return await web.post(f"/ui/cases/{case_id}/{path}", data=data)


async def test_staff_move_a_case_and_record_entries_through_the_page(
    web: httpx.AsyncClient,
) -> None:
    case_id = await open_case(web)
    await sign_in(web, "staff-a1")
    page = (await web.get(f"/ui/cases/{case_id}")).text
    # Danish by default; the model's phase names in Danish; the opening note shown to staff.
    assert "Klasseteam" in page and "Trappemodellen" in page and "Mor ringede" in page

    r = await post_form(web, case_id, "transitions", page, action="move", to="resource-team")
    assert r.status_code == 303 and r.headers["location"].startswith(f"/ui/cases/{case_id}")
    page = (await web.get(r.headers["location"])).text
    assert 'role="status">Gemt.' in page
    assert (await api_case(web, case_id))["phase"] == "resource-team"

    # The resource team's requirements are missing: refused with each one named, in Danish,
    # with what was typed kept, and nothing changed.
    r = await post_form(
        web, case_id, "transitions", page, action="move", to="plan", reason="Vi prøver"
    )
    assert r.status_code == 409
    # The follow-up date must be one the team agreed, not the model's 14 days from opening.
    assert problems_of(r.text) == [
        "Sagen kan ikke dette endnu.",
        "mangler: sparring fra ressourceteamet",
        "mangler: en aftalt opfølgningsdato",
    ]
    assert ">Vi prøver</textarea>" in r.text
    assert (await api_case(web, case_id))["phase"] == "resource-team"

    # A contact form with every mistake at once: each named, linked to its field, nothing stored.
    before = len((await api_case(web, case_id))["entries"])  # type: ignore[arg-type]
    r = await post_form(web, case_id, "entries", page, kind="contact", form="sparring")
    assert r.status_code == 422
    problems = problems_of(r.text)
    assert sorted(problems) == sorted(
        ["dato: Udfyld feltet.", "fik fat i nogen: Udfyld feltet.", "med: Vælg mindst én."]
    )
    assert 'href="#f-contact-on"' in r.text and 'id="f-contact-on"' in r.text
    assert len((await api_case(web, case_id))["entries"]) == before  # type: ignore[arg-type]

    page = (await web.get(f"/ui/cases/{case_id}")).text
    for fields in (
        {"kind": "contact", "form": "sparring", "with": "resource-team", "on": "2026-11-23"}
        | {"reached": "true"},
        {"kind": "evaluation", "due": "2026-12-07"},
    ):
        r = await post_form(web, case_id, "entries", page, **fields)
        assert r.status_code == 303, problems_of(r.text)
        page = (await web.get(f"/ui/cases/{case_id}")).text
    r = await post_form(web, case_id, "transitions", page, action="move", to="plan")
    assert r.status_code == 303
    case = await api_case(web, case_id)
    assert case["phase"] == "plan" and case["next_evaluation_due"] == "2026-12-07"
    kinds = [e["kind"] for e in case["entries"]]  # type: ignore[attr-defined]
    assert kinds.count("contact") == 1 and kinds.count("evaluation") == 1


async def test_a_stale_page_and_a_forged_form_change_nothing(web: httpx.AsyncClient) -> None:
    case_id = await open_case(web)
    await sign_in(web, "staff-a1")
    stale = (await web.get(f"/ui/cases/{case_id}")).text
    r = await post_form(web, case_id, "transitions", stale, action="move", to="resource-team")
    assert r.status_code == 303
    # The first page again: its version is old now.
    r = await post_form(
        web, case_id, "entries", stale, kind="cause", category="family", note="Skilsmisse"
    )
    assert r.status_code == 412
    assert problems_of(r.text) == ["Sagen er ændret, siden du åbnede den. Genindlæs siden."]
    forged = await web.post(
        f"/ui/cases/{case_id}/entries",
        data={"version": version_of(stale), "kind": "cause", "category": "family"},
    )
    assert forged.status_code == 403
    kinds = [e["kind"] for e in (await api_case(web, case_id))["entries"]]  # type: ignore[attr-defined]
    assert kinds.count("cause") == 1  # the one open_case recorded


async def test_other_schools_staff_cannot_reach_the_case_and_views_are_audited(
    web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    case_id = await open_case(web)
    await sign_in(web, "staff-a2")
    assert (await web.get(f"/ui/cases/{case_id}")).status_code == 404
    assert (await web.get(f"/ui/cases/{uuid.uuid4()}")).status_code == 404
    assert (await web.get("/ui/cases/not-a-uuid")).status_code == 404
    own = (await web.get("/ui/schools/a2")).text
    r = await web.post(
        f"/ui/cases/{case_id}/transitions",
        data={"csrf_token": csrf_of(own), "version": "1", "action": "move", "to": "resource-team"},
    )
    assert r.status_code == 404
    assert (await api_case(web, case_id))["phase"] == "class-team"

    web.cookies.clear()
    await sign_in(web, "staff-a1")
    assert (await web.get(f"/ui/cases/{case_id}")).status_code == 200
    async with sessionmaker() as session:
        rows = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.endpoint == "/ui/cases/{case_id}")
            )
        ).all()
    assert [(r.subject, r.pupil_id, r.school_id, r.method) for r in rows] == [
        ("staff-a1", PUPIL_OF["a1"], "a1", "GET")
    ]


async def test_the_municipality_sees_the_case_without_free_text_or_forms(
    web: httpx.AsyncClient,
) -> None:
    case_id = await open_case(web, note="Meget følsomt")
    await sign_in(web, "admin-aalborg")
    r = await web.get(f"/ui/cases/{case_id}")
    assert r.status_code == 200
    assert "Klasseteam" in r.text and "Meget følsomt" not in r.text
    assert "/transitions" not in r.text and "/entries" not in r.text
    own = (await web.get("/ui/municipality")).text
    r = await web.post(
        f"/ui/cases/{case_id}/transitions",
        data={"csrf_token": csrf_of(own), "version": "1", "action": "move", "to": "resource-team"},
    )
    assert r.status_code == 403


async def test_the_school_page_puts_overdue_cases_first_and_exports_its_reports(
    web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    case_id = await open_case(web)
    async with sessionmaker() as session, session.begin():
        case = await session.get(Case, uuid.UUID(case_id))
        assert case is not None
        case.overdue_reasons = ["evaluation-overdue"]
    await sign_in(web, "staff-a1")
    page = (await web.get("/ui/schools/a1")).text
    overdue = page.index("Overskredne sager")
    assert overdue < page.index("Åbne bekymringer")
    assert f'href="/ui/cases/{case_id}"' in page[overdue:] and "Evalueringen er overskredet" in page
    for section in ("Tæt på en grænse", "Åbne sager pr. fase og tovholder", "Fravær pr. ugedag"):
        assert section in page, section
    assert "Bærum-tabellen" in page and "Konsulteret" in page

    r = await web.get("/ui/schools/a1/export/cases.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[:2] == [
        "school_id,dimension,key,open_cases,overdue_cases",
        "a1,phase,class-team,1,1",
    ]
    assert (await web.get("/ui/schools/a1/export/baerum.csv")).text.startswith(
        "school_id,school_level,pupils,completely_absent,consulted,referred,ppr_total"
    )
    assert (await web.get("/ui/schools/a1/export/secrets.csv")).status_code == 404
    assert (await web.get("/ui/schools/a2/export/cases.csv")).status_code == 404


async def test_the_municipality_page_rolls_up_cases_and_the_baerum_table_for_the_admin(
    web: httpx.AsyncClient,
) -> None:
    await open_case(web)
    await sign_in(web, "admin-aalborg")
    page = (await web.get("/ui/municipality")).text
    assert "Åbne sager pr. skole og fase" in page and "Klasseteam" in page
    assert "Bærum-tabellen" in page and "Alle skoler" in page
    assert "Mor ringede" not in page and PUPIL_OF["a1"] not in page
    web.cookies.clear()
    await sign_in(web, "ppr-aalborg")
    page = (await web.get("/ui/municipality")).text
    assert "Bærum-tabellen" not in page and "Åbne sager" not in page


async def test_staff_mark_a_concern_as_seen_from_the_school_page(
    web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(web, "staff-a1")
    page = (await web.get("/ui/schools/a1")).text
    concern = concern_id("a1", "concern")
    action = f'action="/ui/concerns/{concern}/acknowledgement"'
    assert action in page
    forged = await web.post(f"/ui/concerns/{concern}/acknowledgement", data={"as": "seen"})
    assert forged.status_code == 403
    r = await web.post(
        f"/ui/concerns/{concern}/acknowledgement",
        data={"csrf_token": csrf_of(page), "return_to": "/ui/schools/a1", "as": "seen"},
    )
    assert (r.status_code, r.headers["location"]) == (303, f"/ui/schools/a1#concern-{concern}")
    page = (await web.get("/ui/schools/a1")).text
    assert action not in page and "Set af staff-a1" in " ".join(page.split())
    r = await web.get(f"/v1/concerns/{concern}", headers=STAFF_A1)
    assert r.json()["acknowledgement"]["as"] == "seen"
    # Another school's concern: the same 404 as one that does not exist.
    other = concern_id("a2", "concern")
    r = await web.post(
        f"/ui/concerns/{other}/acknowledgement",
        data={"csrf_token": csrf_of(page), "as": "seen"},
    )
    assert r.status_code == 404
