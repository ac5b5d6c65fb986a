"""The web page over HTTP: sign-in through the local OpenID Connect provider, sessions, CSRF,
tenancy, audit, languages and headers. The browser tests (test_browser.py) repeat the main path
in a real Chromium."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.models import AuditEntry, WebSession
from opspor_api.settings import ApiSettings
from opspor_api.web.deps import PLAIN_COOKIE, SECURE_COOKIE
from opspor_api.web.security import CONTENT_SECURITY_POLICY
from opspor_shared.access import route_rules
from opspor_shared.auth import Role
from tests.api.test_access import MONDAY, PUPIL_OF, concern_id
from tests.api.test_concerns import concern_event
from tests.auth import bearer
from tests.web.conftest import csrf_of, sign_in

pytestmark = pytest.mark.usefixtures("seeded")


async def test_sign_in_maps_the_providers_claims_to_the_apis_roles_and_tenancy(
    web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    r = await web.get("/ui/schools/a1")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Fschools%2Fa1"
    login = await web.get(r.headers["location"])
    query = parse_qs(urlsplit(login.headers["location"]).query)
    # Authorization code with PKCE (S256), state and nonce.
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43 and query["state"] and query["nonce"]
    async with sessionmaker() as session:
        pending = (await session.scalars(select(WebSession))).one()
    # The challenge is the S256 of the verifier kept server-side for the token request.
    assert pending.code_verifier is not None and pending.role is None
    assert create_s256_code_challenge(pending.code_verifier) == query["code_challenge"][0]
    assert (pending.login_state, pending.nonce) == (query["state"][0], query["nonce"][0])

    r = await sign_in(web, "staff-a1", "/ui/schools/a1")
    assert r.status_code == 303 and r.headers["location"] == "/ui/schools/a1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{PLAIN_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    page = await web.get("/ui/schools/a1")
    assert page.status_code == 200
    assert "Skole a1" in page.text and PUPIL_OF["a1"] in page.text
    # Only the hash of the cookie's id is stored, with the principal the claims gave.
    raw = web.cookies[PLAIN_COOKIE]
    async with sessionmaker() as session:
        rows = (await session.scalars(select(WebSession))).all()
    assert [r.id_hash for r in rows] == [hashlib.sha256(raw.encode()).hexdigest()]
    assert (rows[0].role, rows[0].municipality, rows[0].schools) == (
        "school_staff",
        "aalborg",
        ["a1"],
    )
    assert all(raw not in (r.csrf_token, r.id_hash) for r in rows)


async def test_a_session_id_from_before_sign_in_is_worthless_afterwards(
    web: httpx.AsyncClient,
) -> None:
    await web.get("/ui/login")
    planted = web.cookies[PLAIN_COOKIE]
    await sign_in(web, "staff-a1")
    assert web.cookies[PLAIN_COOKIE] != planted
    web.cookies.clear()
    web.cookies.set(PLAIN_COOKIE, planted)
    assert (await web.get("/ui/schools/a1")).status_code == 303


async def test_a_callback_with_a_foreign_state_or_missing_claims_signs_nobody_in(
    web: httpx.AsyncClient,
) -> None:
    await web.get("/ui/login")
    r = await web.get("/ui/callback?code=abc&state=forged")
    assert r.status_code == 400 and "set-cookie" not in r.headers
    r = await sign_in(web, "staff-without-schools")
    assert r.status_code == 403
    assert (await web.get("/ui/schools/a1")).status_code == 303


async def test_one_schools_staff_cannot_reach_another_schools_pupil_or_school(
    web: httpx.AsyncClient,
) -> None:
    await sign_in(web, "staff-a1")
    own = await web.get(f"/ui/pupils/{PUPIL_OF['a1']}")
    assert own.status_code == 200 and "secret explanation of a1" in own.text
    unknown = await web.get("/ui/pupils/pupil-zz")
    for target in (
        f"/ui/pupils/{PUPIL_OF['a2']}",
        f"/ui/pupils/{PUPIL_OF['o1']}",
        "/ui/schools/a2",
        "/ui/schools/o1",
    ):
        r = await web.get(target)
        assert r.status_code == 404, target
        assert "Skole a2" not in r.text and "secret explanation" not in r.text
        # Exactly what an unknown pupil gets: nothing tells a foreign pupil exists.
        assert r.text.replace(target, "") == unknown.text.replace("/ui/pupils/pupil-zz", "")
    assert (await web.get("/ui/pupils/bad id!")).status_code == 404


async def test_ppr_sees_only_ppr_level_concerns_and_no_absence_record(
    web: httpx.AsyncClient,
) -> None:
    await sign_in(web, "ppr-aalborg")
    pupil = await web.get(f"/ui/pupils/{PUPIL_OF['a1']}")
    assert pupil.status_code == 200
    assert "rule-ppr-may" in pupil.text and "rule-concern" not in pupil.text
    assert 'class="calendar"' not in pupil.text
    # a2's pupil has no PPR-level concern: invisible to PPR.
    assert (await web.get(f"/ui/pupils/{PUPIL_OF['a2']}")).status_code == 404
    municipality = await web.get("/ui/municipality")
    assert municipality.status_code == 200
    assert "Skole a1" in municipality.text and "Skole o1" not in municipality.text


async def test_each_page_admits_only_the_roles_of_its_api_routes(
    web_app: FastAPI, web: httpx.AsyncClient
) -> None:
    expected = {
        ("GET", "/ui/"): set(Role),
        ("POST", "/ui/logout"): set(Role),
        ("POST", "/ui/language"): set(Role),
        ("GET", "/ui/schools/{school_id}"): {Role.SCHOOL_STAFF, Role.PPR},
        ("GET", "/ui/pupils/{pupil_id}"): {Role.SCHOOL_STAFF, Role.PPR},
        ("GET", "/ui/municipality"): {Role.MUNICIPALITY_ADMIN, Role.PPR},
        ("GET", "/ui/concerns/{concern_id}"): {Role.SCHOOL_STAFF, Role.PPR},
        # The same roles as GET /v1/cases/{id} and its entries and transitions routes.
        ("GET", "/ui/cases/{case_id}"): {Role.SCHOOL_STAFF, Role.PPR, Role.MUNICIPALITY_ADMIN},
        ("POST", "/ui/cases/{case_id}/entries"): {Role.SCHOOL_STAFF, Role.PPR},
        ("POST", "/ui/cases/{case_id}/transitions"): {Role.SCHOOL_STAFF},
        # The CSV exports of the school's reports: as the API's report routes, school staff.
        ("GET", "/ui/schools/{school_id}/export/{report}.csv"): {Role.SCHOOL_STAFF},
        # The municipality's roll-ups as CSV: as the API's municipality report routes.
        ("GET", "/ui/municipality/export/{report}.csv"): {Role.MUNICIPALITY_ADMIN},
        ("POST", "/ui/concerns/{concern_id}/acknowledgement"): {Role.SCHOOL_STAFF, Role.PPR},
    }
    public = {"/ui/login", "/ui/callback", "/ui/signed-out", "/ui/static"}
    declared = {k: v for k, v in route_rules(web_app).items() if k[1].startswith("/ui")}
    assert {k for k, v in declared.items() if v is None and k[1] not in public} == set()
    assert {k: set(v) for k, v in declared.items() if v is not None} == expected
    pages = {
        "/ui/schools/{school_id}": "/ui/schools/a1",
        "/ui/pupils/{pupil_id}": f"/ui/pupils/{PUPIL_OF['a1']}",
        "/ui/municipality": "/ui/municipality",
    }
    users = {
        Role.SCHOOL_STAFF: "staff-a1",
        Role.PPR: "ppr-aalborg",
        Role.MUNICIPALITY_ADMIN: "admin-aalborg",
        Role.SCHOOL_SYSTEM: "system-vestbjerg",
        Role.OPERATIONS: "operations",
    }
    failures = []
    for role, sub in users.items():
        web.cookies.clear()
        await sign_in(web, sub)
        for template, url in pages.items():
            status = (await web.get(url)).status_code
            want = 200 if role in expected[("GET", template)] else 403
            if status != want:
                failures.append(f"{role} {url}: {status}, expected {want}")
    assert not failures, failures


async def test_every_pupil_page_view_is_audited_like_an_api_read(
    web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(web, "staff-a1")
    assert (await web.get(f"/ui/pupils/{PUPIL_OF['a1']}")).status_code == 200
    assert (await web.get("/ui/schools/a1")).status_code == 200
    assert (await web.get(f"/ui/pupils/{PUPIL_OF['a2']}")).status_code == 404
    async with sessionmaker() as session:
        rows = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.endpoint.like("/ui/%")).order_by(AuditEntry.id)
            )
        ).all()
    assert [(r.endpoint, r.pupil_id, r.school_id, r.subject, r.role) for r in rows] == [
        ("/ui/pupils/{pupil_id}", PUPIL_OF["a1"], "a1", "staff-a1", "school_staff"),
        ("/ui/schools/{school_id}", PUPIL_OF["a1"], "a1", "staff-a1", "school_staff"),
    ]


async def test_a_form_without_this_sessions_token_is_refused_and_changes_nothing(
    web: httpx.AsyncClient,
) -> None:
    page = await sign_in(web, "staff-a1")
    page = await web.get("/ui/schools/a1")
    for forged in ({}, {"csrf_token": "guess"}):
        r = await web.post("/ui/logout", data=forged)
        assert r.status_code == 403
        r = await web.post("/ui/language", data={**forged, "choice": "en"})
        assert r.status_code == 403
    still = await web.get("/ui/schools/a1")
    assert still.status_code == 200 and 'lang="da"' in still.text
    r = await web.post("/ui/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/ui/signed-out"
    assert (await web.get("/ui/schools/a1")).status_code == 303
    # A form posted after the session ended leads to sign-in, and from there to the start page.
    r = await web.post("/ui/language", data={"csrf_token": csrf_of(page.text), "choice": "en"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2F"


async def test_language_by_choice_or_browser(web: httpx.AsyncClient) -> None:
    await sign_in(web, "staff-a1")
    nb = await web.get("/ui/schools/a1", headers={"Accept-Language": "nb-NO,nb;q=0.9,en;q=0.5"})
    assert 'lang="nb"' in nb.text and "Åpne bekymringer" in nb.text
    en = await web.get("/ui/schools/a1", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert 'lang="en"' in en.text and "Open concerns" in en.text
    da = await web.get("/ui/schools/a1", headers={"Accept-Language": "fr"})
    assert 'lang="da"' in da.text and "Åbne bekymringer" in da.text
    r = await web.post(
        "/ui/language",
        data={"csrf_token": csrf_of(da.text), "choice": "en", "return_to": "/ui/schools/a1"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/schools/a1"
    chosen = await web.get("/ui/schools/a1", headers={"Accept-Language": "da"})
    assert 'lang="en"' in chosen.text
    # Dates in the chosen language: the crossing date of the seeded concerns (2026-09-21).
    assert "Sep 21, 2026" in chosen.text
    assert "21. sep. 2026" in da.text


async def test_a_concerns_rule_and_finding_are_worded_in_the_readers_language(
    web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """As the mails word them (one catalogue, opspor_shared.wording), with the categories the
    rule counts; a concern whose rule its pack does not define keeps the engine's words."""
    event = concern_event(PUPIL_OF["a1"], MONDAY, level="concern", school="a1")
    async with sessionmaker() as session, session.begin():
        await ConcernRepository(session).apply(
            [
                {
                    **event.data,
                    "concern_id": uuid.UUID(event.data["concern_id"]),
                    "crossing_date": MONDAY,
                    "pack_id": "dk-aalborg-2018",
                    "rule_id": "consecutive-5",
                    "rule_version": "1",
                }
            ]
        )
    await sign_in(web, "staff-a1")
    page = f"/ui/pupils/{PUPIL_OF['a1']}"
    da = (await web.get(page, headers={"Accept-Language": "da"})).text
    article = re.search(rf'<article id="concern-{event.data["concern_id"]}".*?</article>', da, re.S)
    assert article, "the concern is not on the page"
    assert "5 fraværsdage i træk, grænse 5" in article.group(0)
    assert "5 fraværsdage i træk (Ulovligt fravær)" in article.group(0)
    assert "consecutive" not in article.group(0).replace("consecutive-5", "")
    nb = (await web.get(page, headers={"Accept-Language": "nb"})).text
    assert "5 fraværsdager på rad, grense 5" in nb
    en = (await web.get(page, headers={"Accept-Language": "en"})).text
    assert "5 consecutive absence days, limit 5" in en
    # The seeded concerns name rules (rule-concern, rule-ppr-may) the pack does not have.
    assert "secret explanation of a1" in da


async def test_pages_carry_a_strict_csp_and_security_headers(web: httpx.AsyncClient) -> None:
    await sign_in(web, "staff-a1")
    for url in ("/ui/schools/a1", "/ui/pupils/pupil-zz", "/ui/static/css/app.css"):
        r = await web.get(url)
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    page = await web.get("/ui/schools/a1")
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text
    assert "http://" not in page.text.replace("http://127.0.0.1", "")
    # The API is untouched: JSON routes still need a bearer token, whatever the cookie.
    assert (await web.get("/v1/rule-packs")).status_code == 401


async def test_a_session_expires_when_idle_and_after_its_maximum_age(
    web_settings: ApiSettings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    now = [datetime.now(UTC)]
    app = create_app(web_settings, clock=lambda: now[0])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url=web_settings.web_base_url or ""
        ) as web:
            await sign_in(web, "staff-a1")
            now[0] += timedelta(minutes=web_settings.web_session_idle_minutes - 1)
            assert (await web.get("/ui/schools/a1")).status_code == 200
            now[0] += timedelta(minutes=web_settings.web_session_idle_minutes + 1)
            assert (await web.get("/ui/schools/a1")).status_code == 303
            await sign_in(web, "staff-a1")
            for _ in range(web_settings.web_session_max_hours * 3):
                now[0] += timedelta(minutes=20)
                r = await web.get("/ui/schools/a1")
                if r.status_code == 303:
                    break
            assert r.status_code == 303
            # Expired rows are deleted by the next sign-in: only the new session is left.
            await sign_in(web, "staff-a1")
    async with sessionmaker() as session:
        left = await session.scalar(select(func.count()).select_from(WebSession))
    assert left == 1


def test_over_https_the_cookie_is_secure_and_host_prefixed(web_settings: ApiSettings) -> None:
    from opspor_api.web.deps import cookie_name, secure_cookies

    https = web_settings.model_copy(update={"web_base_url": "https://opspor.aalborg.dk"})
    assert cookie_name(https) == SECURE_COOKIE and secure_cookies(https)
    assert cookie_name(web_settings) == PLAIN_COOKIE and not secure_cookies(web_settings)


async def test_page_views_share_the_apis_rate_limit_per_person(
    web_settings: ApiSettings,
) -> None:
    limited = web_settings.model_copy(update={"rate_limit_per_second": 0.01, "rate_limit_burst": 4})
    app = create_app(limited)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url=limited.web_base_url or ""
        ) as web:
            await sign_in(web, "staff-a1", "/ui/schools/a1")
            statuses = [(await web.get("/ui/schools/a1")).status_code for _ in range(5)]
            assert statuses == [200, 200, 200, 200, 429]
            other = httpx.AsyncClient(transport=transport, base_url=limited.web_base_url or "")
            async with other:
                await sign_in(other, "staff-a2", "/ui/schools/a2")
                assert (await other.get("/ui/schools/a2")).status_code == 200


async def test_without_an_identity_provider_the_pages_say_so_and_the_api_is_unchanged(
    web_settings: ApiSettings,
) -> None:
    bare = web_settings.model_copy(update={"oidc_issuer": None})
    app = create_app(bare)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as web:
            r = await web.get("/ui/schools/a1")
            assert r.status_code == 303
            r = await web.get(r.headers["location"])
            assert r.status_code == 503 and "OIDC_ISSUER" in r.text
            assert r.headers["content-type"].startswith("text/html")
            assert (await web.get("/v1/rule-packs")).status_code == 401


async def test_a_notice_link_leads_to_the_pupil_page_and_never_across_schools(
    web: httpx.AsyncClient,
) -> None:
    await sign_in(web, "staff-a1")
    own = concern_id("a1", "concern")
    r = await web.get(f"/ui/concerns/{own}")
    assert (r.status_code, r.headers["location"]) == (
        303,
        f"/ui/pupils/{PUPIL_OF['a1']}#concern-{own}",
    )
    for other in (concern_id("a2", "concern"), concern_id("o1", "concern"), "not-a-uuid"):
        assert (await web.get(f"/ui/concerns/{other}")).status_code == 404
    assert (await web.get(f"/ui/cases/{uuid.uuid4()}")).status_code == 404


def _table(html: str, table_id: str) -> list[list[str]]:
    found = re.search(
        rf'<table class="numbers" id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S
    )
    assert found, f"no table {table_id}"
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<t[hd][^>]*>.*?</t[hd]>", row)
        ]
        for row in re.findall(r"<tr>.*?</tr>", found.group(1), re.S)
    ]


async def test_the_municipality_page_shows_its_pooled_weekday_and_month_patterns(
    web_settings: ApiSettings,
) -> None:
    """On Friday 2 October 2026, the school year so far is 10 August - 2 October. The matrix
    data: a1's and a2's pupil (no enrolment, so at their school for the whole period) each
    have one unauthorized day, Monday 21 September. The municipality: 2 of 2 x 8 Mondays
    (12.5 %), 2 of 2 x 22 September school days (0.0455, shown as 4.6 %)."""
    friday = datetime(2026, 10, 2, 12, tzinfo=UTC)
    app = create_app(web_settings, clock=lambda: friday)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url=web_settings.web_base_url or ""
        ) as web:
            await sign_in(web, "admin-aalborg")
            page = await web.get("/ui/municipality", headers={"Accept-Language": "en"})
            assert page.status_code == 200
            assert "Absence per weekday" in page.text and "Absence per month" in page.text
            period = r"The school year so far:\s+Aug 10, 2026 \u2013 Oct 2, 2026\."
            assert re.search(period, page.text), page.text
            days = _table(page.text, "weekday-table")
            assert [r[0] for r in days] == ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
            # Weekday or month, illness, authorized, unauthorized, total.
            assert days[0][1:] == ["0.0 %", "0.0 %", "12.5 %", "12.5 %"]
            assert {tuple(r[1:]) for r in days[1:]} == {("0.0 %",) * 4}
            months = _table(page.text, "month-table")
            assert [r[0] for r in months] == ["August 2026", "September 2026", "October 2026"]
            assert months[1][1:] == ["0.0 %", "0.0 %", "4.6 %", "4.6 %"]
            assert 'href="/ui/municipality/export/patterns.csv"' in page.text
            assert 'id="weekday-chart"' in page.text and 'id="month-chart"' in page.text

            # The CSV link: the API's document for the page's period, each school, then all.
            export = await web.get("/ui/municipality/export/patterns.csv")
            assert export.status_code == 200, export.text
            disposition = export.headers["content-disposition"]
            assert disposition == 'attachment; filename="patterns-aalborg.csv"'
            api = await web.get(
                "/v1/municipalities/aalborg/reports/patterns",
                params={"from": "2026-08-10", "to": "2026-10-02"},
                headers=bearer(Role.MUNICIPALITY_ADMIN, "aalborg") | {"Accept": "text/csv"},
            )
            assert api.status_code == 200 and export.text == api.text
            lines = export.text.splitlines()
            assert lines[0].startswith("school_id,kind,key,")
            assert ",weekday,1,16,0.0000,0.0000,0.1250,0.1250" in lines
            assert ",month,2026-09,44,0.0000,0.0000,0.0455,0.0455" in lines
            assert "a1,weekday,1,8,0.0000,0.0000,0.1250,0.1250" in lines
            assert {line.split(",")[0] for line in lines[1:]} == {"a1", "a2", ""}
            assert (await web.get("/ui/municipality/export/nothing.csv")).status_code == 404

            # PPR sees the concern counts only: no patterns, and no export.
            web.cookies.clear()
            await sign_in(web, "ppr-aalborg")
            page = await web.get("/ui/municipality")
            assert page.status_code == 200 and 'id="weekday-table"' not in page.text
            assert (await web.get("/ui/municipality/export/patterns.csv")).status_code == 403
