"""Routes of the resource team's web page under /ui: thin, like the JSON endpoints; the data
comes from web/service.py, which calls the same services the API does."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.cases import service as cases_service
from opspor_api.cases.repository import CaseRepository
from opspor_api.cases.schemas import EntryIn, Transition
from opspor_api.cases.service import PreconditionFailed
from opspor_api.concerns import service as concerns_service
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.concerns.schemas import AcknowledgementIn
from opspor_api.deps import Calendars, Packs, Session
from opspor_api.errors import NotFound, ProblemError
from opspor_api.reports.endpoints import csv_response
from opspor_api.reports.schemas import CloseToLimitReport, PatternRow
from opspor_api.settings import ApiSettings
from opspor_api.validation import ID_PATTERN
from opspor_api.web import service
from opspor_api.web.deps import (
    CsrfChecked,
    CurrentSession,
    LoginRequired,
    PageError,
    WebUser,
    cookie_name,
    formatter,
    language_of,
    page_allow,
    page_auditor,
    policy,
    secure_cookies,
)
from opspor_api.web.i18n import LANGUAGES, Formatter
from opspor_api.web.oidc import OidcClient, SignInFailed
from opspor_api.web.repository import WebSessionRepository
from opspor_api.web.schemas import CATEGORIES, FormState
from opspor_shared.auth import Role
from opspor_shared.logging import get_logger

log = get_logger(__name__)

HERE = Path(__file__).parent
# Reachable without a session: signing in, its callback, the signed-out page, and the assets
# (which hold no data).
PUBLIC_UI_PATHS = frozenset({"/ui/login", "/ui/callback", "/ui/signed-out", "/ui/static"})
_ID = re.compile(ID_PATTERN)

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

router = APIRouter(prefix="/ui", include_in_schema=False)

AnyUser = Annotated[
    WebUser,
    page_allow(
        Role.SCHOOL_STAFF, Role.PPR, Role.MUNICIPALITY_ADMIN, Role.SCHOOL_SYSTEM, Role.OPERATIONS
    ),
]
# The same roles as the JSON routes behind each page.
ConcernReader = Annotated[WebUser, page_allow(Role.SCHOOL_STAFF, Role.PPR)]
SchoolStaff = Annotated[WebUser, page_allow(Role.SCHOOL_STAFF)]
CountReader = Annotated[WebUser, page_allow(Role.MUNICIPALITY_ADMIN, Role.PPR)]


def render(
    request: Request,
    name: str,
    fmt: Formatter,
    user: WebUser | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = templates.get_template(name).render(
        _=fmt.gettext,
        ngettext=fmt.ngettext,
        fmt=fmt,
        user=user,
        principal=user.principal if user else None,
        csrf_token=user.session.csrf_token if user else None,
        languages=LANGUAGES,
        language=fmt.language,
        here=request.url.path,
        Role=Role,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def _check_id(value: str) -> str:
    if not (1 <= len(value) <= 64) or not _ID.fullmatch(value):
        raise PageError(404, "Page not found.")
    return value


def _oidc(request: Request) -> OidcClient:
    client: OidcClient | None = request.app.state.oidc
    if client is None:
        raise PageError(503, "Sign-in is not configured (OIDC_ISSUER).")
    return client


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def _set_cookie(response: Response, request: Request, value: str) -> None:
    settings = _settings(request)
    response.set_cookie(
        cookie_name(settings),
        value,
        max_age=settings.web_session_max_hours * 3600,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(settings),
    )


def home_of(user: WebUser) -> str:
    p = user.principal
    if p.role is Role.SCHOOL_STAFF and p.schools:
        return f"/ui/schools/{sorted(p.schools)[0]}"
    if p.role in (Role.MUNICIPALITY_ADMIN, Role.PPR):
        return "/ui/municipality"
    raise PageError(403, "Your role may not see this page.")


@router.get("/")
async def home(user: AnyUser) -> RedirectResponse:
    return RedirectResponse(home_of(user), status_code=303)


@router.get("/login")
async def login(
    request: Request, session: Session, row: CurrentSession, next: str | None = None
) -> RedirectResponse:
    client = _oidc(request)
    try:
        pending = await client.login()
    except SignInFailed as exc:
        raise PageError(502, str(exc)) from None
    raw = await service.begin_login(
        WebSessionRepository(session),
        pending,
        service.safe_return_to(next),
        row.language if row else None,
        request.app.state.clock(),
        policy(_settings(request)),
        replacing=row,
    )
    response = RedirectResponse(pending.url, status_code=303)
    _set_cookie(response, request, raw)
    return response


@router.get("/callback")
async def callback(
    request: Request,
    session: Session,
    row: CurrentSession,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    client = _oidc(request)
    if row is None or row.login_state is None or row.code_verifier is None or row.nonce is None:
        raise PageError(400, "The sign-in has expired. Sign in again.")
    if error or not code or not state or state != row.login_state:
        raise PageError(400, "The sign-in was refused or did not come from this page.")
    try:
        principal = await client.finish(code, row.code_verifier, row.nonce)
    except SignInFailed as exc:
        log.warning("web_sign_in_failed", reason=str(exc))
        raise PageError(403, "The sign-in was refused.") from None
    now = request.app.state.clock()
    raw = await service.complete_login(
        WebSessionRepository(session), row, principal, now, policy(_settings(request))
    )
    log.info("web_signed_in", role=principal.role.value, municipality=principal.municipality)
    response = RedirectResponse(service.safe_return_to(row.return_to), status_code=303)
    _set_cookie(response, request, raw)
    return response


@router.post("/logout")
async def logout(
    request: Request, session: Session, user: AnyUser, row: CsrfChecked
) -> RedirectResponse:
    await service.end_session(WebSessionRepository(session), row)
    response = RedirectResponse("/ui/signed-out", status_code=303)
    response.delete_cookie(
        cookie_name(_settings(request)),
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(_settings(request)),
    )
    return response


@router.get("/signed-out")
async def signed_out(request: Request, row: CurrentSession) -> HTMLResponse:
    fmt = Formatter(language_of(request, row))
    return render(request, "signed_out.html", fmt, None)


@router.post("/language")
async def language(
    session: Session,
    user: AnyUser,
    row: CsrfChecked,
    choice: Annotated[str, Form(max_length=8)],
    return_to: Annotated[str, Form(max_length=500)] = "/ui/",
) -> RedirectResponse:
    if choice not in LANGUAGES:
        raise PageError(422, "Unknown language.")
    await service.choose_language(WebSessionRepository(session), row, choice)
    return RedirectResponse(service.safe_return_to(return_to), status_code=303)


@router.get("/schools/{school_id}")
async def school_page(
    request: Request,
    school_id: str,
    user: ConcernReader,
    session: Session,
    calendars: Calendars,
    packs: Packs,
) -> HTMLResponse:
    _check_id(school_id)
    now = request.app.state.clock()
    try:
        view = await service.school_view(session, user.principal, school_id, calendars, packs, now)
    except NotFound:
        raise PageError(404, "Page not found.") from None
    reports = await service.school_reports(
        session, user.principal, school_id, calendars, packs, view.period, user.language, now
    )
    pupils = [(c.pupil_id, c.school_id) for g in view.groups for c in g.concerns]
    pupils += [(c.pupil_id, c.school_id) for c in reports.overdue or []]
    pupils += [(n.pupil_id, school_id) for n in reports.near or []]
    await page_auditor(request, session, user).record(sorted(set(pupils)), 200)
    fmt = formatter(user, view.school.timezone)
    chart = {
        "labels": [fmt.month(m.month) for m in view.months],
        "series": [
            {
                "category": c,
                "label": fmt.label("category", c),
                "data": [float(m.days.get(c, 0)) for m in view.months],
            }
            for c in CATEGORIES
        ],
        "yLabel": fmt.gettext("Absence days"),
    }
    weekday_chart = share_chart(
        fmt,
        [fmt.gettext(WEEKDAYS[int(r.key) - 1]) for r in reports.weekdays or []],
        reports.weekdays or [],
    )
    return render(
        request,
        "school.html",
        fmt,
        user,
        view=view,
        reports=reports,
        categories=CATEGORIES,
        weekday_names=WEEKDAYS,
        chart_json=json.dumps(chart),
        weekday_chart_json=json.dumps(weekday_chart),
    )


# Catalogue keys of the weekdays, Monday first (ISO weekday - 1).
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def share_chart(fmt: Formatter, labels: list[str], rows: Sequence[PatternRow]) -> dict[str, Any]:
    """A patterns chart (static/js/charts.js): per cent of pupil school days per category."""
    return {
        "labels": labels,
        "series": [
            {
                "category": c,
                "label": fmt.label("category", c),
                "data": [float(getattr(r, f"{c}_share") or 0) * 100 for r in rows],
            }
            for c in CATEGORIES
        ],
        "yLabel": fmt.gettext("Absence, per cent of pupil school days"),
    }


def month_of(key: str) -> date:
    """A patterns row's month key (YYYY-MM) as its first day, for fmt.month."""
    return date.fromisoformat(f"{key}-01")


EXPORTS = ("cases", "baerum", "close-to-limit", "patterns")


@router.get("/schools/{school_id}/export/{report}.csv")
async def school_export(
    request: Request,
    school_id: str,
    report: str,
    user: SchoolStaff,
    session: Session,
    calendars: Calendars,
    packs: Packs,
) -> Response:
    """A school report as CSV, one click from the page: the same document as the API's
    `Accept: text/csv` answer, for the signed-in staff of the school."""
    _check_id(school_id)
    if report not in EXPORTS:
        raise PageError(404, "Page not found.")
    now = request.app.state.clock()
    try:
        view = await service.school_view(session, user.principal, school_id, calendars, packs, now)
    except NotFound:
        raise PageError(404, "Page not found.") from None
    document = await service.school_report(
        session, user.principal, school_id, report, calendars, packs, view.period, now
    )
    if isinstance(document, CloseToLimitReport):
        pupils = sorted({(r.pupil_id, school_id) for r in document.rows})
        await page_auditor(request, session, user).record(pupils, 200)
    return csv_response(document, f"{report}-{school_id}")


@router.get("/pupils/{pupil_id}")
async def pupil_page(
    request: Request,
    pupil_id: str,
    user: ConcernReader,
    session: Session,
    calendars: Calendars,
    packs: Packs,
) -> HTMLResponse:
    _check_id(pupil_id)
    try:
        view = await service.pupil_view(
            session, user.principal, pupil_id, calendars, packs, request.app.state.clock()
        )
    except NotFound:
        raise PageError(404, "Page not found.") from None
    schools = {c.school_id for c in view.concerns} | ({view.school.id} if view.school else set())
    await page_auditor(request, session, user).record(
        [(pupil_id, s) for s in sorted(schools)] or [(pupil_id, None)], 200
    )
    fmt = formatter(user, view.school.timezone if view.school else None)
    return render(request, "pupil.html", fmt, user, view=view, categories=CATEGORIES)


@router.get("/concerns/{concern_id}")
async def concern_link(concern_id: str, user: ConcernReader, session: Session) -> Response:
    """Where a notice's link leads (README "Notices"): the pupil's page, at the concern."""
    try:
        found = await concerns_service.get_concern(
            ConcernRepository(session), user.principal, uuid.UUID(concern_id)
        )
    except (ValueError, NotFound):
        raise PageError(404, "Page not found.") from None
    return RedirectResponse(f"/ui/pupils/{found.pupil_id}#concern-{found.concern_id}", 303)


@router.post("/concerns/{concern_id}/acknowledgement")
async def acknowledge_concern(
    request: Request,
    concern_id: str,
    user: ConcernReader,
    session: Session,
    row: CsrfChecked,
    return_to: Annotated[str, Form(max_length=500)] = "/ui/",
) -> RedirectResponse:
    """The concern card's "Mark as seen": the same service (and rules) as the API's
    PUT /v1/concerns/{id}/acknowledgement, audited like it."""
    try:
        found = uuid.UUID(concern_id)
        concern = await concerns_service.acknowledge(
            ConcernRepository(session),
            CaseRepository(session),
            user.principal,
            found,
            AcknowledgementIn.model_validate({"as": "seen"}),
        )
    except (ValueError, NotFound):
        raise PageError(404, "Page not found.") from None
    await page_auditor(request, session, user).record([(concern.pupil_id, concern.school_id)], 200)
    return RedirectResponse(f"{service.safe_return_to(return_to)}#concern-{found}", status_code=303)


CaseReader = Annotated[WebUser, page_allow(Role.SCHOOL_STAFF, Role.PPR, Role.MUNICIPALITY_ADMIN)]
# The same roles as POST /v1/cases/{id}/entries and /transitions.
CaseWorker = Annotated[WebUser, page_allow(Role.SCHOOL_STAFF, Role.PPR)]
CaseMover = Annotated[WebUser, page_allow(Role.SCHOOL_STAFF)]
ENTRY = TypeAdapter(EntryIn)
# Form fields that carry several values (checkboxes) and those that are not the entry's.
LIST_FIELDS = frozenset({"with", "exclusions"})
FORM_ONLY = frozenset({"csrf_token", "version", "kind", "action"})


def _case_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise PageError(404, "Page not found.") from None


async def _case_page(
    request: Request,
    session: AsyncSession,
    user: WebUser,
    case_id: uuid.UUID,
    state: FormState | None = None,
) -> HTMLResponse:
    try:
        view = await service.case_view(session, user.principal, case_id)
    except NotFound:
        raise PageError(404, "Page not found.") from None
    await page_auditor(request, session, user).record(
        [(view.case.pupil_id, view.case.school_id)], state.status if state else 200
    )
    fmt = formatter(user, view.timezone)

    def name_of(names: Mapping[str, str]) -> str:
        return names.get(fmt.language) or names.get("en") or ""

    interventions = {i.code: name_of(i.names) for i in view.model.interventions}
    interventions["other"] = fmt.gettext("Other (describe in the note)")
    goals = {
        str(g.entry_id): f"#{g.entry_id} {(g.text or '')[:60] if view.shows_text else ''}".strip()
        for g in view.goals
    }
    return render(
        request,
        "case.html",
        fmt,
        user,
        status=state.status if state else 200,
        view=view,
        state=state,
        saved=request.query_params.get("saved") == "1" and state is None,
        name_of=name_of,
        intervention_names=interventions,
        phase_name=lambda phase_id: (
            name_of(getattr(view.model.phase(phase_id), "names", {})) or phase_id
        ),
        goal_names=goals,
    )


@router.get("/cases/{case_id}")
async def case_page(
    request: Request, case_id: str, user: CaseReader, session: Session
) -> HTMLResponse:
    """The case: where it stands, what it still needs, its history, and (for those who work
    it) the forms that change it. A notice's or reminder's link leads here."""
    return await _case_page(request, session, user, _case_id(case_id))


def _problems(fmt: Formatter, exc: ValidationError, kind: str | None) -> list[tuple[str, str]]:
    """pydantic's errors as (field, message in the reader's language). The union's tag (the
    `kind`) is not a field of the form, so it is dropped from each location."""
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"] if p != kind]
        field = loc[0] if loc else ""
        # An unticked group of checkboxes sends nothing at all.
        kind_of_error = "too_short" if field in LIST_FIELDS else e["type"]
        message = FIELD_MESSAGES.get(kind_of_error, "Check this field.")
        out.append((field, fmt.gettext(message)))
    return out


# pydantic's error types, in words the page can translate.
FIELD_MESSAGES = {
    "missing": "Fill in this field.",
    "string_too_short": "Fill in this field.",
    "too_short": "Choose at least one.",
    "string_too_long": "This is too long.",
    "date_parsing": "Give a date.",
    "date_from_datetime_parsing": "Give a date.",
    "literal_error": "Choose one of the options.",
    "string_pattern_mismatch": "Use only the letters a-z, digits and hyphens.",
    "bool_parsing": "Choose yes or no.",
    "int_parsing": "Choose one of the options.",
    "value_error": "This contains characters that are not allowed.",
    "union_tag_invalid": "Choose what to record.",
    "extra_forbidden": "This field is not part of the form.",
}


# A refusal's headline by status; the service's own detail is English API text.
REFUSALS = {
    409: "The case cannot do this yet.",
    422: "Check the form.",
}
RECORDED = re.compile(r" \((\d+) recorded\)$")


def _refused(fmt: Formatter, exc: ProblemError) -> list[tuple[str, str]]:
    """A refusal of the case service in the reader's language. Its field details are the
    API's English texts (README "Cases"), shown translated where the catalogue has them."""
    if isinstance(exc, PreconditionFailed):
        return [("", fmt.gettext("The case changed since you opened it. Reload the page."))]
    problems = [("", fmt.gettext(REFUSALS.get(exc.status, "The case cannot do this yet.")))]
    for error in exc.errors or []:
        detail, count = error.detail, ""
        if found := RECORDED.search(detail):
            detail, count = detail[: found.start()], f" ({found.group(1)})"
        if detail.startswith("missing: "):
            detail = fmt.gettext("missing: %(what)s") % {"what": fmt.gettext(detail[9:])}
        else:
            detail = fmt.gettext(detail)
        field = re.split(r"[.\[]", error.field)[0]
        # `to` is the move button's hidden field: nothing to link to or to name.
        problems.append(("" if field == "to" else field, detail + count))
    return problems


def _form_values(form: Any) -> dict[str, list[str]]:
    return {key: [str(v) for v in form.getlist(key)] for key in form if key != "csrf_token"}


def _entry_body(values: dict[str, list[str]]) -> dict[str, Any]:
    """The form as the API's JSON body: empty fields left out, checkboxes as lists; pydantic
    then reads dates, numbers and yes/no from their text as it does in the API."""
    body: dict[str, Any] = {"kind": (values.get("kind") or [""])[0]}
    for key, items in values.items():
        if key in FORM_ONLY:
            continue
        if key in LIST_FIELDS:
            body[key] = [v for v in items if v]
        elif items and items[0].strip():
            body[key] = items[0].strip() if key not in ("note", "text", "outcome") else items[0]
    return body


def _if_match(values: dict[str, list[str]]) -> str:
    version = (values.get("version") or [""])[0]
    return f'"{version}"' if version.isdigit() else '"0"'


@router.post("/cases/{case_id}/entries")
async def case_entry(
    request: Request, case_id: str, user: CaseWorker, session: Session, row: CsrfChecked
) -> Response:
    found = _case_id(case_id)
    values = _form_values(await request.form())
    body = _entry_body(values)
    fmt = formatter(user)
    settings = _settings(request)
    try:
        entry = ENTRY.validate_python(body)
    except ValidationError as exc:
        state = FormState(body["kind"], values, _problems(fmt, exc, body["kind"]), 422)
        return await _case_page(request, session, user, found, state)
    repo = CaseRepository(session, settings.cases_topic)
    try:
        loaded = await cases_service.add_entry(
            repo, user.principal, found, _if_match(values), entry, request.app.state.clock()
        )
    except NotFound:
        raise PageError(404, "Page not found.") from None
    except ProblemError as exc:
        await session.rollback()
        state = FormState(body["kind"], values, _refused(fmt, exc), exc.status)
        return await _case_page(request, session, user, found, state)
    await page_auditor(request, session, user).record(
        [(loaded.case.pupil_id, loaded.case.school_id)], 201
    )
    return RedirectResponse(f"/ui/cases/{found}?saved=1#status", status_code=303)


@router.post("/cases/{case_id}/transitions")
async def case_transition(
    request: Request, case_id: str, user: CaseMover, session: Session, row: CsrfChecked
) -> Response:
    found = _case_id(case_id)
    values = _form_values(await request.form())
    action = (values.get("action") or ["move"])[0]
    body = {k: v for k, v in _entry_body(values).items() if k in ("to", "close", "reason")}
    fmt = formatter(user)
    try:
        transition = Transition.model_validate(body)
    except ValidationError as exc:
        state = FormState(action, values, _problems(fmt, exc, None), 422)
        return await _case_page(request, session, user, found, state)
    repo = CaseRepository(session, _settings(request).cases_topic)
    try:
        loaded = await cases_service.transition(
            repo, user.principal, found, _if_match(values), transition, request.app.state.clock()
        )
    except NotFound:
        raise PageError(404, "Page not found.") from None
    except ProblemError as exc:
        await session.rollback()
        state = FormState(action, values, _refused(fmt, exc), exc.status)
        return await _case_page(request, session, user, found, state)
    await page_auditor(request, session, user).record(
        [(loaded.case.pupil_id, loaded.case.school_id)], 200
    )
    return RedirectResponse(f"/ui/cases/{found}?saved=1#status", status_code=303)


@router.get("/municipality")
async def municipality_page(
    request: Request, user: CountReader, session: Session, calendars: Calendars
) -> HTMLResponse:
    try:
        view = await service.municipality_view(session, user.principal)
    except NotFound:
        raise PageError(404, "Page not found.") from None
    rollup = await service.municipality_rollup(
        session, user.principal, calendars, user.language, request.app.state.clock()
    )
    fmt = formatter(user)
    weekday_chart = share_chart(
        fmt, [fmt.gettext(WEEKDAYS[int(r.key) - 1]) for r in rollup.weekdays], rollup.weekdays
    )
    month_chart = share_chart(
        fmt, [fmt.month(month_of(r.key)) for r in rollup.months], rollup.months
    )
    return render(
        request,
        "municipality.html",
        fmt,
        user,
        view=view,
        rollup=rollup,
        categories=CATEGORIES,
        weekday_names=WEEKDAYS,
        month_of=month_of,
        weekday_chart_json=json.dumps(weekday_chart),
        month_chart_json=json.dumps(month_chart),
    )


MUNICIPALITY_EXPORTS = ("patterns",)
# The same role as the API's municipality report routes.
Administrator = Annotated[WebUser, page_allow(Role.MUNICIPALITY_ADMIN)]


@router.get("/municipality/export/{report}.csv")
async def municipality_export(
    request: Request, report: str, user: Administrator, session: Session, calendars: Calendars
) -> Response:
    """A municipality report as CSV, one click from the page: the same document as the API's
    `Accept: text/csv` answer (each school, then the municipality), for its administrator."""
    if report not in MUNICIPALITY_EXPORTS:
        raise PageError(404, "Page not found.")
    try:
        document = await service.municipality_patterns_so_far(
            session, user.principal, calendars, request.app.state.clock()
        )
    except NotFound:
        raise PageError(404, "Page not found.") from None
    return csv_response(document, f"{report}-{user.principal.municipality}")


def install_web(app: FastAPI, settings: ApiSettings) -> frozenset[str]:
    """Adds the pages, their assets and their error pages; returns the public paths."""
    app.state.oidc = (
        OidcClient(
            settings.oidc_issuer,
            settings.oidc_client_id or "",
            settings.oidc_client_secret,
            f"{(settings.web_base_url or '').rstrip('/')}/ui/callback",
            timeout=settings.auth_jwks_timeout_seconds,
            leeway_seconds=settings.auth_leeway_seconds,
        )
        if settings.oidc_issuer
        else None
    )
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        from urllib.parse import urlencode

        return RedirectResponse(f"/ui/login?{urlencode({'next': exc.return_to})}", 303)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        row = request.scope.get("opspor.web_session")
        principal = row.principal if isinstance(row, service.SessionInfo) else None
        fmt = Formatter(language_of(request, row))
        user = WebUser(principal, row, fmt.language) if row and principal else None
        return render(
            request, "error.html", fmt, user, status=exc.status, message=fmt.gettext(exc.message)
        )

    return PUBLIC_UI_PATHS
