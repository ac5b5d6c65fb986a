"""The OpenID Connect client of the web page: authorization code flow with PKCE (S256), state
and nonce, the provider's keys and endpoints from its discovery document.

The ID token is verified by the same TokenVerifier as the API's bearer tokens (issuer, audience =
client id, signature from the provider's JWKS, expiry), so its claims `role`, `municipality` and
`schools` become exactly the Principal a bearer token with those claims would.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from opspor_shared.auth import IssuerConfig, Principal, TokenVerifier, Unauthenticated
from opspor_shared.logging import get_logger

log = get_logger(__name__)

DISCOVERY_TTL_SECONDS = 3600.0


class SignInFailed(Exception):
    """The provider refused or answered something unusable; the message is safe to show."""


@dataclass(frozen=True)
class LoginRequest:
    url: str
    state: str
    code_verifier: str
    nonce: str


class OidcClient:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        *,
        timeout: float = 5.0,
        leeway_seconds: float = 30.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.timeout = timeout
        self.leeway = leeway_seconds
        self._metadata: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._verifier: TokenVerifier | None = None
        self._lock = asyncio.Lock()

    async def _discover(self, *, refresh: bool = False) -> dict[str, Any]:
        async with self._lock:
            fresh = time.monotonic() - self._fetched_at < DISCOVERY_TTL_SECONDS
            if self._metadata is not None and fresh and not refresh:
                return self._metadata
            url = f"{self.issuer}/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as http:
                    response = await http.get(url)
                    response.raise_for_status()
                    metadata: dict[str, Any] = response.json()
                    if str(metadata.get("issuer", "")).rstrip("/") != self.issuer:
                        raise SignInFailed("the identity provider names another issuer")
                    keys = await http.get(metadata["jwks_uri"])
                    keys.raise_for_status()
                    pems = _signing_keys(keys.json())
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                log.warning("oidc_discovery_failed", issuer=self.issuer)
                raise SignInFailed("the identity provider cannot be reached") from None
            if not pems:
                raise SignInFailed("the identity provider publishes no usable signing key")
            # Its keys as static PEMs rather than a JWKS URL: ID tokens need not name a key
            # (kid) when the provider has one, and the keys are refetched with the metadata.
            self._verifier = TokenVerifier(
                [
                    IssuerConfig(
                        issuer=metadata["issuer"], audience=self.client_id, public_keys=pems
                    )
                ],
                leeway_seconds=self.leeway,
                jwks_timeout=self.timeout,
            )
            self._metadata = metadata
            self._fetched_at = time.monotonic()
            return metadata

    async def login(self) -> LoginRequest:
        metadata = await self._discover()
        state, verifier, nonce = generate_token(32), generate_token(64), generate_token(32)
        url = prepare_grant_uri(
            metadata["authorization_endpoint"],
            self.client_id,
            "code",
            redirect_uri=self.redirect_uri,
            scope="openid",
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        return LoginRequest(url=url, state=state, code_verifier=verifier, nonce=nonce)

    async def finish(self, code: str, code_verifier: str, nonce: str) -> Principal:
        metadata = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
            "client_id": self.client_id,
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                if self.client_secret:
                    auth = httpx.BasicAuth(self.client_id, self.client_secret)
                    response = await http.post(metadata["token_endpoint"], data=form, auth=auth)
                else:
                    response = await http.post(metadata["token_endpoint"], data=form)
        except httpx.HTTPError:
            log.warning("oidc_token_unreachable", issuer=self.issuer)
            raise SignInFailed("the identity provider cannot be reached") from None
        if response.status_code != 200:
            log.warning("oidc_token_refused", issuer=self.issuer, status=response.status_code)
            raise SignInFailed("the identity provider refused the sign-in")
        try:
            id_token = str(response.json()["id_token"])
        except (ValueError, KeyError, TypeError):
            raise SignInFailed("the identity provider sent no ID token") from None
        try:
            principal = await self._verify(id_token)
        except Unauthenticated:
            # The provider may have rotated its keys since they were fetched: once more, fresh.
            await self._discover(refresh=True)
            try:
                principal = await self._verify(id_token)
            except Unauthenticated as exc:
                raise SignInFailed(f"the ID token was refused: {exc}") from None
        # The signature was verified just above; this only reads the nonce back.
        claims = jwt.decode(id_token, options={"verify_signature": False})
        if claims.get("nonce") != nonce:
            raise SignInFailed("the ID token does not answer this sign-in (nonce)")
        return principal

    async def _verify(self, id_token: str) -> Principal:
        assert self._verifier is not None, "discovered before any token is verified"
        return await self._verifier.verify(id_token)


def _signing_keys(jwks: Any) -> tuple[str, ...]:
    """PEMs of the RSA and P-256 signature keys of a JWK set; other keys are skipped."""
    pems: list[str] = []
    for jwk in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(jwk).key
            pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
            IssuerConfig(issuer="check", audience="check", public_keys=(pem,))
        except (jwt.PyJWTError, AttributeError, ValueError):
            continue
        pems.append(pem)
    return tuple(pems)
