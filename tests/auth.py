"""Tokens for tests: one local issuer per test process and a helper that picks the natural role
for each route, for tests that are about something other than access."""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import tempfile
from collections.abc import Generator, Iterable
from pathlib import Path

import httpx

from opspor_shared.auth import IssuerConfig, Role
from opspor_shared.devstack.issuer import LocalIssuer


@functools.cache
def local_issuer() -> LocalIssuer:
    directory = Path(tempfile.mkdtemp(prefix="opspor-test-issuer-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return LocalIssuer(directory, issuer="opspor-test", audience="opspor")


def issuers_setting() -> list[IssuerConfig]:
    return [local_issuer().config]


def bearer(
    role: Role,
    municipality: str | None = "aalborg",
    schools: Iterable[str] = ("vestbjerg",),
    *,
    issuer: LocalIssuer | None = None,
    **claims: object,
) -> dict[str, str]:
    minted = (issuer or local_issuer()).mint(
        role,
        municipality=None if role is Role.OPERATIONS else municipality,
        schools=schools if role in (Role.SCHOOL_SYSTEM, Role.SCHOOL_STAFF) else (),
        **claims,  # type: ignore[arg-type]
    )
    return {"Authorization": f"Bearer {minted}"}


def natural_role(method: str, path: str) -> Role:
    if path == "/metrics":
        return Role.OPERATIONS
    if path.endswith("/access-log"):
        return Role.MUNICIPALITY_ADMIN
    if (
        path.startswith("/v1/registrations")
        or re.fullmatch(r"/v1/pupils/[^/]+/(registrations|enrolments)", path)
        or re.fullmatch(r"/v1/schools/[^/]+/enrolments/[^/]+", path)
        or re.fullmatch(r"/v1/schools/[^/]+/(register-complete|completeness)", path)
    ):
        return Role.SCHOOL_SYSTEM
    if path.endswith(("/concerns", "/cases")) or path.startswith(
        ("/v1/concerns/", "/v1/cases/", "/v1/case-models")
    ):
        return Role.SCHOOL_STAFF
    return Role.MUNICIPALITY_ADMIN


class RouteAuth(httpx.Auth):
    """Adds a token of the route's natural role unless the request carries one already."""

    def __init__(
        self,
        municipality: str = "aalborg",
        schools: Iterable[str] = ("vestbjerg",),
        issuer: LocalIssuer | None = None,
    ) -> None:
        self.headers = {
            role: bearer(role, municipality, tuple(schools), issuer=issuer, subject=f"test-{role}")
            for role in Role
        }

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" not in request.headers:
            role = natural_role(request.method, request.url.path)
            request.headers.update(self.headers[role])
        yield request
