"""Bearer JWT verification (shared by the three services), against static PEM keys and a JWKS
document served by a real local HTTP server."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from opspor_shared.auth import (
    AuthUnavailable,
    IssuerConfig,
    Role,
    TokenVerifier,
    Unauthenticated,
    bearer_token,
)
from opspor_shared.devstack.issuer import LocalIssuer

ISSUER, AUDIENCE = "https://idp.aalborg.example", "opspor"


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "laerer-1",
        "exp": now + 300,
        "nbf": now - 5,
        "role": "school_staff",
        "municipality": "aalborg",
        "schools": ["vestbjerg"],
        "azp": "elevportal",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def verifier(*keys: str, leeway: float = 30, jwks_url: str | None = None) -> TokenVerifier:
    config = (
        IssuerConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_url)
        if jwks_url
        else IssuerConfig(issuer=ISSUER, audience=AUDIENCE, public_keys=keys)
    )
    return TokenVerifier([config], leeway_seconds=leeway, jwks_timeout=2.0)


async def test_rs256_and_es256_tokens_become_principals(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    v = verifier(pem(rsa_key), pem(ec_key))
    for key, alg in ((rsa_key, "RS256"), (ec_key, "ES256")):
        principal = await v.verify(jwt.encode(claims(), key, algorithm=alg))
        assert principal.role is Role.SCHOOL_STAFF
        assert (principal.subject, principal.municipality, principal.client) == (
            "laerer-1",
            "aalborg",
            "elevportal",
        )
        assert principal.schools == frozenset({"vestbjerg"})


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": -120}, "expired"),  # seconds from now, resolved when the test runs
        ({"nbf": 120}, "not valid yet"),
        ({"aud": "another-service"}, "aud"),
        ({"iss": "https://idp.odense.example"}, "issuer is not trusted"),
        ({"exp": None}, "exp"),
        ({"sub": None}, "sub"),
        ({"role": "headmaster"}, "role claim"),
        ({"municipality": None}, "municipality"),
        ({"schools": None}, "schools"),
        ({"schools": "vestbjerg"}, "schools"),
    ],
)
async def test_bad_claims_are_refused_with_a_reason(
    ec_key: ec.EllipticCurvePrivateKey, overrides: dict[str, Any], reason: str
) -> None:
    now = int(time.time())
    for name in ("exp", "nbf"):
        if isinstance(overrides.get(name), int):
            overrides = overrides | {name: now + overrides[name]}
    token = jwt.encode(claims(**overrides), ec_key, algorithm="ES256")
    with pytest.raises(Unauthenticated, match=reason) as caught:
        await verifier(pem(ec_key)).verify(token)
    assert token not in str(caught.value)


async def test_clock_leeway_accepts_small_skew_only(ec_key: ec.EllipticCurvePrivateKey) -> None:
    skewed = jwt.encode(claims(exp=int(time.time()) - 10), ec_key, algorithm="ES256")
    assert (await verifier(pem(ec_key), leeway=30).verify(skewed)).subject == "laerer-1"
    with pytest.raises(Unauthenticated, match="expired"):
        await verifier(pem(ec_key), leeway=0).verify(skewed)


async def test_hs256_none_and_tampered_tokens_are_refused(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    v = verifier(pem(ec_key))
    # HS256 keyed with the public key: the classic algorithm-confusion attack.
    hs = jwt.encode(claims(), "a-shared-secret-of-at-least-32-bytes!!", algorithm="HS256")
    unsigned = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
    good = jwt.encode(claims(), ec_key, algorithm="ES256")
    header, payload, signature = good.split(".")
    promoted = json.loads(base64.urlsafe_b64decode(payload + "=="))
    promoted["role"] = "municipality_admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(promoted).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{forged_payload}.{signature}"
    other_key = jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    for token, reason in (
        (hs, "RS256 or ES256"),
        (unsigned, "RS256 or ES256"),
        (tampered, "signature"),
        (other_key, "signature"),
        ("not.a.jwt", "well-formed"),
    ):
        with pytest.raises(Unauthenticated, match=reason):
            await v.verify(token)


def test_issuer_settings_refuse_unsafe_or_ambiguous_values(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    base = {"issuer": ISSUER, "audience": AUDIENCE}
    for bad in (
        {},  # no keys at all
        {"jwks_url": "https://idp.example/jwks", "public_keys": [pem(ec_key)]},  # both
        {"jwks_url": "http://idp.example/jwks"},  # keys over plain http
        {"public_keys": ["-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"]},
        {"public_keys": [pem(ec.generate_private_key(ec.SECP384R1()))]},  # not P-256
    ):
        with pytest.raises(ValidationError):
            IssuerConfig(**(base | bad))
    with pytest.raises(ValueError, match="at least one"):
        TokenVerifier([], leeway_seconds=30, jwks_timeout=1)


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc") == "abc"
    for bad in (None, "", "Basic dXNlcjpwdw==", "Bearer", "Bearer   "):
        assert bearer_token(bad) is None


class Jwks:
    """A local JWKS endpoint; `delay` makes it slow, `fail` makes it answer 500."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.delay = 0.0
        self.fail = False
        self.hits = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.hits += 1
                time.sleep(jwks.delay)
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(500 if jwks.fail else 200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def add(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> None:
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        self.keys.append(jwk | {"kid": kid, "use": "sig", "alg": alg})


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


async def test_jwks_keys_are_fetched_cached_and_unknown_kids_refused(
    jwks: Jwks, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.add(rsa_key, "rsa-1")
    jwks.add(ec_key, "ec-1")
    v = verifier(jwks_url=jwks.url)
    rs = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    for token in (rs, es, rs):
        assert (await v.verify(token)).subject == "laerer-1"
    assert jwks.hits == 1  # cached
    unknown = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-9"})
    with pytest.raises(Unauthenticated, match="kid"):
        await v.verify(unknown)
    # An RSA key named by an ES256 token's kid does not verify it.
    mismatch = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    with pytest.raises(Unauthenticated):
        await v.verify(mismatch)


async def test_an_unreachable_or_slow_jwks_is_unavailable_not_a_crash_or_a_hang(
    jwks: Jwks, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.add(ec_key, "ec-1")
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    jwks.fail = True
    with pytest.raises(AuthUnavailable):
        await verifier(jwks_url=jwks.url).verify(token)
    jwks.fail, jwks.delay = False, 5.0
    slow = TokenVerifier(
        [IssuerConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url)],
        leeway_seconds=30,
        jwks_timeout=0.3,
    )
    started = time.monotonic()
    with pytest.raises(AuthUnavailable):
        await slow.verify(token)
    assert time.monotonic() - started < 4.0  # bounded by the timeout, not by the server


async def test_the_local_issuer_mints_tokens_the_verifier_accepts(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path / "auth")
    again = LocalIssuer(tmp_path / "auth")  # the key is generated once and reused
    assert issuer.public_key_pem == again.public_key_pem
    assert (tmp_path / "auth" / "signing-key.pem").stat().st_mode & 0o077 == 0
    v = TokenVerifier([issuer.config], leeway_seconds=0, jwks_timeout=1)
    token = again.mint(Role.SCHOOL_SYSTEM, municipality="aalborg", schools=["vestbjerg"])
    principal = await v.verify(token)
    assert principal.role is Role.SCHOOL_SYSTEM and principal.schools == {"vestbjerg"}
    ops = await v.verify(issuer.mint(Role.OPERATIONS))
    assert ops.municipality is None and ops.schools == frozenset()
