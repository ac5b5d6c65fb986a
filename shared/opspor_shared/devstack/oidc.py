"""A local OpenID Connect provider for `make run` and the web tests: the PyPI package
oidc-provider-mock (authorization code flow, discovery, JWKS, RS256 ID tokens with any claims
we give a user), served on a free loopback port from a thread.

It stands in for the municipality's identity provider: each predefined user carries the claims
`role`, `municipality` and `schools` that a real provider must add (README "Authentication and
access"); the sign-in page lists them as one-click buttons. Its issuer is its own address.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from opspor_shared.auth import CLAIM_MUNICIPALITY, CLAIM_ROLE, CLAIM_SCHOOLS, Role

CLIENT_ID = "opspor-web"
# A confidential client: the mock accepts any secret, a real provider issues one.
CLIENT_SECRET = "opspor-web-local-secret"  # noqa: S105 - a fixed value for the local mock only


def claims(role: Role, municipality: str | None, schools: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {CLAIM_ROLE: role.value, "name": f"{role.value} {municipality or ''}"}
    if municipality is not None:
        out[CLAIM_MUNICIPALITY] = municipality
    if schools:
        out[CLAIM_SCHOOLS] = list(schools)
    return out


# One user per role (sub -> claims), for the municipality that `make run` demonstrates.
USERS: dict[str, dict[str, Any]] = {
    "staff-vestbjerg": claims(Role.SCHOOL_STAFF, "aalborg", ["vestbjerg"]),
    "ppr-aalborg": claims(Role.PPR, "aalborg"),
    "admin-aalborg": claims(Role.MUNICIPALITY_ADMIN, "aalborg"),
    "system-vestbjerg": claims(Role.SCHOOL_SYSTEM, "aalborg", ["vestbjerg"]),
    "operations": claims(Role.OPERATIONS, None),
}


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class LocalOidcProvider:
    users: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: USERS)
    port: int = 0
    _server: BaseWSGIServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> LocalOidcProvider:
        # A dev dependency, imported only where the mock runs. It still imports authlib modules
        # that authlib marks deprecated; that is the mock's business, not a fault of ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import oidc_provider_mock

        app = oidc_provider_mock.app(
            require_nonce=True,
            issue_refresh_token=False,
            user_claims=[
                oidc_provider_mock.User(sub=sub, claims=dict(c)) for sub, c in self.users.items()
            ],
        )
        self._server = make_server(
            "127.0.0.1", self.port, app, threaded=True, request_handler=_Quiet
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, web_base_url: str) -> dict[str, str]:
        """The api settings that sign in through this provider."""
        return {
            "OIDC_ISSUER": self.issuer,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "WEB_BASE_URL": web_base_url,
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalOidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
