"""Bearer JWT verification shared by the three services.

Tokens come from municipal identity providers (or, for `make run` and tests, from the local
issuer in opspor_shared.devstack.issuer). Only RS256 and ES256 are accepted; exp, iss, aud and
sub are required, nbf is checked when present. The claims below are the whole contract with an
identity provider: the README documents them for integrators.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from opspor_shared.logging import get_logger

log = get_logger(__name__)

ALGORITHMS = ("RS256", "ES256")
CLAIM_ROLE = "role"
CLAIM_MUNICIPALITY = "municipality"
CLAIM_SCHOOLS = "schools"
# OAuth client of the token, when the identity provider says (azp in OIDC, client_id in RFC 9068).
CLAIMS_CLIENT = ("azp", "client_id")
MAX_SCHOOLS = 500


class Role(enum.StrEnum):
    SCHOOL_SYSTEM = "school_system"
    SCHOOL_STAFF = "school_staff"
    PPR = "ppr"
    MUNICIPALITY_ADMIN = "municipality_admin"
    OPERATIONS = "operations"


SCHOOL_BOUND_ROLES = frozenset({Role.SCHOOL_SYSTEM, Role.SCHOOL_STAFF})


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    issuer: str
    municipality: str | None
    schools: frozenset[str]
    client: str | None

    @property
    def rate_key(self) -> str:
        # One bucket per client application when the token names one, else per subject.
        return f"{self.issuer}|{self.client or self.subject}"


class Unauthenticated(Exception):
    """No usable token. The message is safe to show: it never quotes the token."""


class AuthUnavailable(Exception):
    """The issuer's keys could not be fetched in time; the request may be retried."""


def _public_key(pem: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError("public_keys must be PEM public keys (BEGIN PUBLIC KEY)") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("public_keys must be RSA keys (RS256) or P-256 keys (ES256)")


class IssuerConfig(BaseModel):
    """One trusted identity provider: keys from a JWKS URL or static PEM public keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, description="Exact value of the tokens' iss claim")
    audience: str = Field(min_length=1, description="Value the tokens' aud claim must contain")
    jwks_url: str | None = None
    public_keys: tuple[str, ...] = ()

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value is not None:
            local = value.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]"))
            if not (value.startswith("https://") or local):
                raise ValueError("jwks_url must be an https:// URL (http only for localhost)")
        return value

    @field_validator("public_keys")
    @classmethod
    def _pem_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pem in value:
            _public_key(pem)
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if (self.jwks_url is None) == (not self.public_keys):
            raise ValueError("give either jwks_url or public_keys (one or more), not both")
        return self


class _Issuer:
    def __init__(self, config: IssuerConfig, timeout: float) -> None:
        self.config = config
        self.static = [_public_key(pem) for pem in config.public_keys]
        self.jwks = (
            jwt.PyJWKClient(config.jwks_url, cache_jwk_set=True, lifespan=300, timeout=timeout)
            if config.jwks_url
            else None
        )

    def static_keys(self, alg: str) -> list[Any]:
        wanted = rsa.RSAPublicKey if alg == "RS256" else ec.EllipticCurvePublicKey
        return [k for k in self.static if isinstance(k, wanted)]


class TokenVerifier:
    def __init__(
        self, issuers: Sequence[IssuerConfig], *, leeway_seconds: float, jwks_timeout: float
    ) -> None:
        if not issuers:
            raise ValueError("at least one token issuer must be configured")
        self._issuers = {i.issuer: _Issuer(i, jwks_timeout) for i in issuers}
        self._leeway = leeway_seconds
        self._timeout = jwks_timeout

    async def verify(self, token: str) -> Principal:
        # The docs page's Authorize adds "Bearer " itself: a pasted "Bearer eyJ..." arrives as
        # "Bearer Bearer eyJ...". Say so rather than call the token malformed.
        if token[:7].lower() == "bearer ":
            raise Unauthenticated("the token starts with 'Bearer ': paste the token alone")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthenticated("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthenticated("the token must be signed with RS256 or ES256")
        issuer = self._issuers.get(str(unverified.get("iss", "")))
        if issuer is None:
            raise Unauthenticated("the token's issuer is not trusted")
        keys = await self._keys(issuer, alg, header.get("kid"))
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=issuer.config.audience,
                    issuer=issuer.config.issuer,
                    leeway=self._leeway,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("the token has expired") from None
            except jwt.ImmatureSignatureError:
                raise Unauthenticated("the token is not valid yet (nbf)") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated("the token is not meant for this service (aud)") from None
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthenticated(f"the token lacks the {exc.claim} claim") from None
            except jwt.PyJWTError:
                raise Unauthenticated("the token is not valid") from None
        if claims is None:
            raise Unauthenticated("the token's signature does not verify")
        return principal_from_claims(claims)

    async def _keys(self, issuer: _Issuer, alg: str, kid: object) -> list[Any]:
        if issuer.jwks is None:
            return issuer.static_keys(alg)
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the token names no key (kid)")
        jwks = issuer.jwks
        try:
            # PyJWKClient is blocking (urllib); its own lock and cooldown keep a burst of
            # unknown kids from hammering the identity provider. wait_for bounds the request even
            # when a slow server keeps the socket alive.
            signing = await asyncio.wait_for(
                asyncio.to_thread(jwks.get_signing_key, kid), self._timeout
            )
        except jwt.PyJWKClientConnectionError:
            log.warning("jwks_unreachable", issuer=issuer.config.issuer)
            raise AuthUnavailable("the identity provider's keys could not be fetched") from None
        except TimeoutError:
            log.warning("jwks_timeout", issuer=issuer.config.issuer)
            raise AuthUnavailable("the identity provider's keys could not be fetched") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the token's key (kid) is not known to its issuer") from None
        if signing.algorithm_name != alg:
            raise Unauthenticated("the token's algorithm does not match its key")
        return [signing.key]


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 256:
        raise Unauthenticated(f"the token's {name} claim must be a non-empty string")
    return value


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    try:
        role = Role(str(claims.get(CLAIM_ROLE)))
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise Unauthenticated(f"the token's {CLAIM_ROLE} claim must be one of {known}") from None
    subject = _string(claims, "sub")
    assert subject is not None  # required by verify
    municipality = _string(claims, CLAIM_MUNICIPALITY)
    if municipality is None and role is not Role.OPERATIONS:
        raise Unauthenticated(f"a {role} token needs the {CLAIM_MUNICIPALITY} claim")
    raw_schools = claims.get(CLAIM_SCHOOLS, [])
    if not isinstance(raw_schools, list) or len(raw_schools) > MAX_SCHOOLS:
        raise Unauthenticated(f"the token's {CLAIM_SCHOOLS} claim must be a list of school ids")
    if not all(isinstance(s, str) and s for s in raw_schools):
        raise Unauthenticated(f"the token's {CLAIM_SCHOOLS} claim must be a list of school ids")
    if role in SCHOOL_BOUND_ROLES and not raw_schools:
        raise Unauthenticated(f"a {role} token needs the {CLAIM_SCHOOLS} claim")
    client = None
    for name in CLAIMS_CLIENT:
        if (client := _string(claims, name)) is not None:
            break
    return Principal(
        subject=subject,
        role=role,
        issuer=str(claims["iss"]),
        municipality=municipality,
        schools=frozenset(raw_schools) if role in SCHOOL_BOUND_ROLES else frozenset(),
        client=client,
    )


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
