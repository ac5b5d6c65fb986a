"""The pages in a real browser: Debian's headless Chromium driven by Playwright. Signs in through
the local OpenID Connect provider's page, opens every page, runs the axe-core accessibility scan
on each, edits the address to another school's pupil, forges a form post, checks that the CSP
blocks nothing of our own, and saves the screenshots shown in the README ("Web page")."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Page, async_playwright
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.concerns.repository import ConcernRepository
from opspor_api.web.i18n import Formatter
from opspor_api.web.schemas import CATEGORIES
from opspor_api.web.security import CONTENT_SECURITY_POLICY
from opspor_shared.auth import Role
from tests.api.test_access import PUPIL_OF, seed
from tests.api.test_concerns import concern_event
from tests.auth import bearer
from tests.support import YEAR_BODY, registration

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
# The whole browser session, sign-ins and scans included, must finish well inside this.
BUDGET_SECONDS = 90
DANISH = Formatter("da")  # the browser context's locale


async def seed_school_year(
    web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The matrix data plus what a resource team meeting would see at school a1: absence in
    every category over the autumn and concerns at several levels."""
    await seed(web, sessionmaker)
    days = [date(2026, 8, 17) + timedelta(days=i) for i in range(0, 90)]
    school_days = [
        d for d in days if d.weekday() < 5 and not date(2026, 10, 12) <= d <= date(2026, 10, 16)
    ]
    pattern = ["illness", "unauthorized", "authorized"]
    items = [
        registration(pupil, d, school="a1", category=pattern[(i + n) % 3], extent="1")
        for n, pupil in enumerate([PUPIL_OF["a1"], "pupil-a1-b", "pupil-a1-c"])
        for i, d in enumerate(school_days)
        if (i * (n + 2)) % 7 == 0
    ]
    r = await web.post(
        "/v1/registrations/batch",
        json={"items": items},
        headers=bearer(Role.SCHOOL_SYSTEM, "aalborg", ["a1"]),
    )
    assert r.status_code == 200 and r.json()["inserted"] == len(items), r.text
    rows = []
    for pupil, level, crossing in (
        ("pupil-a1-b", "ppr-must", date(2026, 10, 28)),
        ("pupil-a1-c", "concern", date(2026, 11, 4)),
    ):
        data: dict[str, Any] = concern_event(pupil, crossing, level=level, school="a1").data
        rows.append(
            {
                "concern_id": uuid.uuid5(uuid.NAMESPACE_URL, f"browser|{pupil}"),
                "revision": 1,
                "status": "active",
                "pupil_id": pupil,
                "school_id": "a1",
                "municipality_id": "aalborg",
                "level": level,
                "crossing_date": crossing,
                "pack_id": "dk-aalborg-2018",
                "rule_id": data["explanation"]["rule_id"],
                "rule_version": "1",
                "explanation": data["explanation"]
                | {
                    "contributing": [
                        {
                            "date": "2026-10-27",
                            "slot": "day",
                            "category": "unauthorized",
                            "extent": "1",
                        }
                    ]
                },
            }
        )
    async with sessionmaker() as session, session.begin():
        await ConcernRepository(session).apply(rows)


async def municipal_patterns(web: httpx.AsyncClient) -> list[dict[str, Any]]:
    """aalborg's own rows (school null) of the patterns API over the school year so far, the
    period the municipality page shows."""
    today = datetime.now(ZoneInfo("Europe/Copenhagen")).date()
    r = await web.get(
        "/v1/municipalities/aalborg/reports/patterns",
        params={
            "from": YEAR_BODY["first_day"],
            "to": min(today, date.fromisoformat(YEAR_BODY["last_day"])).isoformat(),
        },
        headers=bearer(Role.MUNICIPALITY_ADMIN, "aalborg"),
    )
    assert r.status_code == 200, r.text
    return [row for row in r.json()["rows"] if row["school_id"] is None]


async def sign_in(page: Page, base: str, sub: str) -> None:
    await page.goto(f"{base}/ui/")
    # The provider's own page: one button per predefined user.
    await page.get_by_role("button", name=sub, exact=True).click()
    await page.wait_for_url(f"{base}/ui/**")


async def serious_violations(page: Page, axe_source: str) -> list[str]:
    # evaluate() runs through the DevTools protocol, which the page's CSP does not govern;
    # injecting a <script> would (rightly) be blocked.
    await page.evaluate(axe_source)
    result = await page.evaluate(
        "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21aa', 'best-practice']})"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_the_resource_team_uses_the_pages_in_chromium(
    served: str, web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed_school_year(web, sessionmaker)
    axe_source = AXE.read_text()
    base = served
    failures: list[str] = []
    console: list[str] = []
    async with asyncio.timeout(BUDGET_SECONDS), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context(
                locale="da-DK", viewport={"width": 1280, "height": 900}
            )
            page = await context.new_page()
            page.set_default_timeout(15_000)
            page.on(
                "console",
                lambda m: console.append(m.text) if m.type in ("error", "warning") else None,
            )

            # Staff of school a1: the school page, its chart and its accessibility.
            await sign_in(page, base, "staff-a1")
            assert page.url == f"{base}/ui/schools/a1"
            response = await page.goto(f"{base}/ui/schools/a1")
            assert response is not None and response.status == 200
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
            await page.wait_for_function("() => Chart.getChart('month-chart') !== undefined")
            assert await page.get_attribute("html", "lang") == "da"
            assert await page.get_by_role("heading", name="Skole a1").is_visible()
            failures += [f"school: {v}" for v in await serious_violations(page, axe_source)]
            await shoot(page, "school")

            # Keyboard: the first Tab reaches the skip link, Enter moves focus to the content.
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.getAttribute('href')") == "#main"
            await page.keyboard.press("Enter")
            assert await page.evaluate("document.activeElement.id") == "main"

            # The pupil page through its link: calendar and concerns.
            await page.get_by_role("link", name=f"Elev {PUPIL_OF['a1']}", exact=True).first.click()
            await page.wait_for_url(f"{base}/ui/pupils/{PUPIL_OF['a1']}")
            assert await page.locator("table.calendar").count() >= 10
            assert await page.locator("td.cat-illness").count() > 0
            failures += [f"pupil: {v}" for v in await serious_violations(page, axe_source)]
            await shoot(page, "pupil")

            # Editing the address to another school's pupil: the same 404 as an unknown one.
            for foreign in (PUPIL_OF["a2"], PUPIL_OF["o1"]):
                r = await page.goto(f"{base}/ui/pupils/{foreign}")
                assert r is not None and r.status == 404
                assert "secret explanation" not in await page.content()

            # A forged form (no CSRF token) is refused and changes nothing.
            await page.goto(f"{base}/ui/schools/a1")
            async with page.expect_navigation() as forged:
                await page.evaluate(
                    """() => { const f = document.createElement('form');
                    f.method = 'post'; f.action = '/ui/language';
                    const c = document.createElement('input'); c.name = 'choice'; c.value = 'en';
                    f.appendChild(c); document.body.appendChild(f); f.submit(); }"""
                )
            forged_response = await forged.value
            assert forged_response is not None and forged_response.status == 403
            await page.goto(f"{base}/ui/schools/a1")
            assert await page.get_attribute("html", "lang") == "da"

            # The language switch (a real form with its token), then sign out.
            await page.get_by_label("Sprog").select_option("nb")
            await page.get_by_role("button", name="Skift").click()
            await page.wait_for_url(f"{base}/ui/schools/a1")
            assert await page.get_attribute("html", "lang") == "nb"
            await page.get_by_role("button", name="Logg ut").click()
            await page.wait_for_url(f"{base}/ui/signed-out")
            r = await page.goto(f"{base}/ui/schools/a1")
            assert r is not None and "/oauth2/authorize" in page.url

            # PPR of the municipality: the municipality page.
            await context.clear_cookies()
            await sign_in(page, base, "ppr-aalborg")
            assert page.url == f"{base}/ui/municipality"
            assert await page.get_by_role("cell", name="Skole o1").count() == 0
            failures += [f"municipality: {v}" for v in await serious_violations(page, axe_source)]

            # The municipality's administrator: the roll-up with cases, the Bærum table and the
            # weekday and month patterns of all its schools' pupils, as charts and tables with
            # the API's numbers for the school year.
            await context.clear_cookies()
            await sign_in(page, base, "admin-aalborg")
            assert page.url == f"{base}/ui/municipality"
            assert await page.get_by_role("heading", name="Bærum-tabellen").is_visible()
            assert await page.get_by_role("heading", name="Fravær pr. ugedag").is_visible()
            assert await page.get_by_role("heading", name="Fravær pr. måned").is_visible()
            await page.wait_for_function(
                "() => Chart.getChart('weekday-chart') && Chart.getChart('month-chart')"
            )
            expected = await municipal_patterns(web)
            for kind, table, chart in (
                ("weekday", "#weekday-table", "weekday-chart"),
                ("month", "#month-table", "month-chart"),
            ):
                rows = [r for r in expected if r["kind"] == kind]
                cells = await page.locator(f"{table} tbody tr").evaluate_all(
                    "rows => rows.map(r => [...r.cells].slice(1).map(c => c.textContent))"
                )
                assert cells == [
                    [DANISH.percent(Decimal(r[f"{c}_share"])) for c in (*CATEGORIES, "total")]
                    for r in rows
                ], kind
                drawn = await page.evaluate(
                    f"Chart.getChart('{chart}').data.datasets.map(d => d.data)"
                )
                assert drawn == [
                    pytest.approx([float(r[f"{c}_share"]) * 100 for r in rows]) for c in CATEGORIES
                ], kind
            assert any(Decimal(r["total_share"]) > 0 for r in expected)  # not all zero
            link = page.get_by_role("link", name="Hent som CSV, pr. skole og for alle skoler")
            assert await link.get_attribute("href") == "/ui/municipality/export/patterns.csv"
            failures += [f"roll-up: {v}" for v in await serious_violations(page, axe_source)]
            await shoot(page, "municipality")
        finally:
            await browser.close()
    csp = [m for m in console if "Content Security Policy" in m]
    assert not csp, f"the CSP blocked something of our own: {csp}"
    assert not failures, "\n".join(failures)


async def test_staff_work_a_case_from_opening_to_closing_in_chromium(
    served: str, web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The school ladder (dk-ladder) from the class team to closing, every step through the
    case page's forms: a refusal shown in the error summary, then each requirement recorded."""
    await seed_school_year(web, sessionmaker)
    axe_source = AXE.read_text()
    base = served
    failures: list[str] = []
    async with asyncio.timeout(BUDGET_SECONDS), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context(
                locale="en-GB", viewport={"width": 1280, "height": 900}
            )
            page = await context.new_page()
            page.set_default_timeout(15_000)
            await sign_in(page, base, "staff-a1")
            await page.goto(f"{base}/ui/pupils/{PUPIL_OF['a1']}")
            await page.get_by_role("link", name="Case opened").first.click()
            await page.wait_for_url(f"{base}/ui/cases/**")
            case_url = page.url
            failures += [f"case: {v}" for v in await serious_violations(page, axe_source)]

            async def move(to: str) -> None:
                await page.get_by_role("button", name=f"Move to {to}").click()
                await page.wait_for_url(f"{case_url}?saved=1#status")

            async def record(summary: str, fields: dict[str, str]) -> None:
                form = page.locator("details.record").filter(
                    has=page.locator("summary", has_text=summary)
                )
                await form.locator("summary").click()
                for label, value in fields.items():
                    field = form.get_by_label(label, exact=True)
                    if await field.evaluate("e => e.tagName") == "SELECT":
                        await field.select_option(value)
                    elif await field.get_attribute("type") == "checkbox":
                        await field.check()
                    else:
                        await field.fill(value)
                await form.get_by_role("button", name="Record").click()
                await page.wait_for_url(f"{case_url}?saved=1#status")

            await move("Resource team")
            assert await page.get_by_role("status").inner_text() == "Saved."

            # No sparring yet: the move is refused and the summary says what is missing.
            await page.get_by_role("button", name="Move to Resource-team plan").click()
            alert = page.get_by_role("alert")
            await alert.wait_for()
            assert "missing: sparring given by the resource team" in await alert.inner_text()
            failures += [f"refused: {v}" for v in await serious_violations(page, axe_source)]
            await shoot(page, "case-refused")
            await page.goto(case_url)

            await record(
                "Contact or meeting",
                {
                    "Form": "sparring",
                    "resource team": "on",
                    "Date": "2026-11-23",
                    "Was someone reached?": "true",
                },
            )
            await record("Evaluation or follow-up date", {"Follow-up date agreed": "2026-12-01"})
            await move("Resource-team plan")
            await record(
                "Action plan",
                {
                    "pupil": "on",
                    "parents": "on",
                    "Runs until": "2027-01-15",
                    "Follow-up date agreed": "2026-12-08",
                    "Note": "A steady adult in the first lesson; pupil and parents at follow-up",
                },
            )
            await record(
                "Intervention",
                {"Type": "support-in-class", "Owner": "teacher-1", "Start": "2026-11-24"},
            )
            await record("Coordinator and leader", {"Coordinator": "teacher-1"})
            await move("External resources")
            await record(
                "Evaluation or follow-up date",
                {"Evaluated on": "2026-11-24", "Result": "resolved"},
            )
            await page.get_by_label("Close with the outcome").select_option("back-in-class")
            await page.get_by_label("Why (optional)").last.fill("Back in class every day")
            await page.get_by_role("button", name="Close the case").click()
            await page.wait_for_url(f"{case_url}?saved=1#status")
            lead = await page.locator("p.lead").inner_text()
            assert "Closed: back in class" in lead
            # Closed: nothing left to change, and the history has every step.
            assert await page.get_by_role("button", name="Record").count() == 0
            history = await page.locator("table.history").inner_text()
            for step in (
                "Class team → Resource team",
                "Resource team → Resource-team plan",
                "External resources → Closed (back in class)",
            ):
                assert step in history, history
            failures += [f"closed: {v}" for v in await serious_violations(page, axe_source)]
            await shoot(page, "case")
        finally:
            await browser.close()
    assert not failures, "\n".join(failures)
