"""Request dependencies of the web page: the session behind the cookie, the signed-in user's
access rule (the same roles as the API's allow(...), declared so create_app checks them), the
CSRF check of every form, and page audit rows."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.routing import APIRoute

from opspor_api.audit.repository import AuditRepository
from opspor_api.audit.service import Auditor
from opspor_api.deps import Session
from opspor_api.ratelimit import RateLimiter
from opspor_api.settings import ApiSettings
from opspor_api.web import service
from opspor_api.web.i18n import Formatter, negotiate
from opspor_api.web.repository import WebSessionRepository
from opspor_shared.access import declare_roles
from opspor_shared.auth import Principal, Role

PLAIN_COOKIE = "opspor_session"
# __Host-: the browser accepts it only with Secure, Path=/ and no Domain, so no other host or
# path can set or shadow it.
SECURE_COOKIE = "__Host-opspor_session"


class LoginRequired(Exception):
    def __init__(self, return_to: str) -> None:
        self.return_to = return_to


class PageError(Exception):
    """An error shown as a page; `message` is a catalogue key, translated when rendered."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def secure_cookies(settings: ApiSettings) -> bool:
    return (settings.web_base_url or "").startswith("https://")


def cookie_name(settings: ApiSettings) -> str:
    return SECURE_COOKIE if secure_cookies(settings) else PLAIN_COOKIE


def policy(settings: ApiSettings) -> service.SessionPolicy:
    return service.SessionPolicy(
        idle=timedelta(minutes=settings.web_session_idle_minutes),
        absolute=timedelta(hours=settings.web_session_max_hours),
    )


@dataclass
class WebUser:
    principal: Principal
    session: service.SessionInfo
    language: str


async def current_session(request: Request, session: Session) -> service.SessionInfo | None:
    settings: ApiSettings = request.app.state.settings
    cached = request.scope.get("opspor.web_session")
    if isinstance(cached, service.SessionInfo):
        return cached
    row = await service.load_session(
        WebSessionRepository(session),
        request.cookies.get(cookie_name(settings)),
        request.app.state.clock(),
        policy(settings),
    )
    request.scope["opspor.web_session"] = row
    return row


CurrentSession = Annotated[service.SessionInfo | None, Depends(current_session)]


def language_of(request: Request, row: service.SessionInfo | None) -> str:
    return negotiate(row.language if row else None, request.headers.get("accept-language"))


def page_allow(*roles: Role) -> Any:
    """The access rule of a page: no session redirects to sign-in; a role that may never see
    the page gets the 403 page. Tenancy is the page's business and answers 404."""
    allowed = frozenset(roles)

    async def dependency(request: Request, row: CurrentSession) -> WebUser:
        principal = row.principal if row is not None else None
        if row is None or principal is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            # After signing in, the browser comes back with a GET: a form's address would not do.
            raise LoginRequired(
                service.safe_return_to(target) if request.method == "GET" else "/ui/"
            )
        if principal.role not in allowed:
            raise PageError(403, "Your role may not see this page.")
        # The API's limit, per signed-in person (the pages skip the bearer middleware).
        limiter: RateLimiter | None = getattr(request.app.state, "limiter", None)
        if limiter is not None and limiter.acquire(f"web|{principal.issuer}|{principal.subject}"):
            raise PageError(429, "Too many requests. Wait a moment and try again.")
        return WebUser(principal, row, language_of(request, row))

    declare_roles(dependency, allowed)
    return Depends(dependency)


async def csrf_checked(
    row: CurrentSession, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> service.SessionInfo:
    """Synchronizer token: a form is accepted only with the token of this session, which a
    page of another site cannot read."""
    if row is None or not csrf_token or not hmac.compare_digest(csrf_token, row.csrf_token):
        raise PageError(403, "The form has expired or did not come from this page. Try again.")
    return row


CsrfChecked = Annotated[service.SessionInfo, Depends(csrf_checked)]


def page_auditor(request: Request, session: Session, user: WebUser) -> Auditor:
    """A page view of pupil data is audited like the API read of the same data."""
    route = request.scope.get("route")
    return Auditor(
        repo=AuditRepository(session),
        principal=user.principal,
        method=request.method,
        endpoint=route.path if isinstance(route, APIRoute) else request.url.path,
        purpose="follow-up",
    )


def formatter(user: WebUser, timezone: str | None = None) -> Formatter:
    return Formatter(user.language, timezone or "Europe/Copenhagen")
