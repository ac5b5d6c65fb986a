"""Access rules for HTTP routes, the same in the api and the ops servers of every service.

Every route declares who may call it with `allow(Role, ...)`; `require_access_rules` refuses to
build an app in which some route declares nothing and is not on the public list, so a route
added later cannot be left open by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from opspor_shared.auth import (
    AuthUnavailable,
    Principal,
    Role,
    TokenVerifier,
    Unauthenticated,
    bearer_token,
)
from opspor_shared.settings import ServiceSettings

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
PRINCIPAL_KEY = "opspor.principal"
PROBLEM_JSON = "application/problem+json"
_ROLES_ATTRIBUTE = "__opspor_roles__"
JWKS_RETRY_AFTER_SECONDS = 5

bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT from a configured issuer (see the README's authentication section)",
)


def token_verifier(settings: ServiceSettings) -> TokenVerifier:
    return TokenVerifier(
        settings.auth_issuers,
        leeway_seconds=settings.auth_leeway_seconds,
        jwks_timeout=settings.auth_jwks_timeout_seconds,
    )


class AccessError(Exception):
    def __init__(
        self,
        status: int,
        type_: str,
        title: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.type = type_
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self, path: str) -> JSONResponse:
        return JSONResponse(
            {
                "type": self.type,
                "title": self.title,
                "status": self.status,
                "detail": self.detail,
                "instance": path,
            },
            status_code=self.status,
            media_type=PROBLEM_JSON,
            headers=self.headers,
        )


def unauthenticated(detail: str) -> AccessError:
    return AccessError(
        401,
        "urn:opspor:problem:unauthenticated",
        "Authentication required",
        detail,
        {"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def forbidden(role: Role) -> AccessError:
    return AccessError(
        403,
        "urn:opspor:problem:forbidden",
        "Forbidden",
        f"the {role} role may not use this endpoint",
    )


async def principal_for(scope: MutableMapping[str, Any], verifier: TokenVerifier) -> Principal:
    """Verifies the request's bearer token once and keeps the principal in the ASGI scope."""
    cached = scope.get(PRINCIPAL_KEY)
    if isinstance(cached, Principal):
        return cached
    authorization = None
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    token = bearer_token(authorization)
    if token is None:
        raise unauthenticated("send a bearer token: Authorization: Bearer <JWT>")
    try:
        principal = await verifier.verify(token)
    except Unauthenticated as exc:
        raise unauthenticated(str(exc)) from None
    except AuthUnavailable as exc:
        raise AccessError(
            503,
            "urn:opspor:problem:auth-unavailable",
            "Authentication temporarily unavailable",
            str(exc),
            {"Retry-After": str(JWKS_RETRY_AFTER_SECONDS)},
        ) from None
    scope[PRINCIPAL_KEY] = principal
    return principal


def allow(*roles: Role) -> Any:
    """The access rule of a route: `principal: Annotated[Principal, allow(Role.PPR)]`.

    No or an invalid token is a 401; a valid token whose role may never use the route is a 403.
    Tenancy (which schools and pupils) is the route's business and answers 404.
    """
    allowed = frozenset(roles)
    if not allowed:
        raise ValueError("allow() needs at least one role")

    async def dependency(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Principal:
        principal = await principal_for(request.scope, request.app.state.verifier)
        if principal.role not in allowed:
            raise forbidden(principal.role)
        return principal

    setattr(dependency, _ROLES_ATTRIBUTE, allowed)
    return Depends(dependency)


def declare_roles(dependency: Callable[..., Any], roles: Iterable[Role]) -> None:
    """Marks `dependency` as a route's access rule, for routes that authenticate another way
    (the web page's session cookie) but must still say which roles may use them."""
    allowed = frozenset(roles)
    if not allowed:
        raise ValueError("declare_roles() needs at least one role")
    setattr(dependency, _ROLES_ATTRIBUTE, allowed)


def _declared_roles(dependant: Dependant) -> frozenset[Role] | None:
    roles = getattr(dependant.call, _ROLES_ATTRIBUTE, None)
    if roles is not None:
        return frozenset(roles)
    for sub in dependant.dependencies:
        if (found := _declared_roles(sub)) is not None:
            return found
    return None


def route_rules(app: FastAPI) -> dict[tuple[str, str], frozenset[Role] | None]:
    """(method, path) of every route, with the roles its allow(...) rule admits (None: none)."""
    rules: dict[tuple[str, str], frozenset[Role] | None] = {}
    for context in iter_route_contexts(app.routes):
        dependant = getattr(context, "dependant", None)
        roles = (
            _declared_roles(dependant)
            if isinstance(context.original_route, APIRoute) and isinstance(dependant, Dependant)
            else None
        )
        for method in sorted(context.methods or {"*"}):
            rules[(method, str(context.path))] = roles
    return rules


class MissingAccessRule(RuntimeError):
    pass


def require_access_rules(app: FastAPI, public: Iterable[str] = PUBLIC_PATHS) -> None:
    """Raises unless every route declares allow(...) or is explicitly public."""
    open_paths = frozenset(public)
    missing = [
        f"{method} {path}"
        for (method, path), roles in route_rules(app).items()
        if roles is None and path not in open_paths
    ]
    if missing:
        raise MissingAccessRule(
            "routes without an access rule (add allow(Role...) or list them as public): "
            + "; ".join(missing)
        )


def install_access_errors(app: FastAPI) -> None:
    @app.exception_handler(AccessError)
    async def _access(request: Request, exc: AccessError) -> JSONResponse:
        return exc.response(request.url.path)
