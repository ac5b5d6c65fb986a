"""Routes of the resource team's web page under /ui: thin, like the JSON endpoints; the data
comes from web/service.py, which calls the same services the API does."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from opspor_api.cases import service as cases_service
from opspor_api.cases.repository import CaseRepository
from opspor_api.concerns import service as concerns_service
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.deps import Calendars, Session
from opspor_api.errors import NotFound
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
from opspor_api.web.schemas import CATEGORIES
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
    request: Request, school_id: str, user: ConcernReader, session: Session, calendars: Calendars
) -> HTMLResponse:
    _check_id(school_id)
    try:
        view = await service.school_view(
            session, user.principal, school_id, calendars, request.app.state.clock()
        )
    except NotFound:
        raise PageError(404, "Page not found.") from None
    await page_auditor(request, session, user).record(
        [(c.pupil_id, c.school_id) for g in view.groups for c in g.concerns], 200
    )
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
    return render(
        request,
        "school.html",
        fmt,
        user,
        view=view,
        categories=CATEGORIES,
        chart_json=json.dumps(chart),
    )


@router.get("/pupils/{pupil_id}")
async def pupil_page(
    request: Request, pupil_id: str, user: ConcernReader, session: Session, calendars: Calendars
) -> HTMLResponse:
    _check_id(pupil_id)
    try:
        view = await service.pupil_view(
            session, user.principal, pupil_id, calendars, request.app.state.clock()
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


@router.get("/cases/{case_id}")
async def case_link(case_id: str, user: ConcernReader, session: Session) -> Response:
    """Where a case reminder's link leads: the pupil's page (the case page is still to come)."""
    try:
        case = await cases_service.read_case(
            CaseRepository(session), user.principal, uuid.UUID(case_id)
        )
    except (ValueError, NotFound):
        raise PageError(404, "Page not found.") from None
    return RedirectResponse(f"/ui/pupils/{case.pupil_id}", 303)


@router.get("/municipality")
async def municipality_page(request: Request, user: CountReader, session: Session) -> HTMLResponse:
    try:
        view = await service.municipality_view(session, user.principal)
    except NotFound:
        raise PageError(404, "Page not found.") from None
    return render(request, "municipality.html", formatter(user), user, view=view)


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
