"""A local token issuer for `make run`, the tests and the benchmark.

It stands in for a municipal identity provider: an ES256 key generated on first use (private key
readable by the owner only) and tokens with the claims the services expect. Production never
trusts it: AUTH_ISSUERS there names the real identity providers.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from opspor_shared.auth import CLAIM_MUNICIPALITY, CLAIM_ROLE, CLAIM_SCHOOLS, IssuerConfig, Role

LOCAL_ISSUER = "opspor-local"
LOCAL_AUDIENCE = "opspor"
KEY_FILE = "signing-key.pem"


class LocalIssuer:
    def __init__(
        self, directory: Path, *, issuer: str = LOCAL_ISSUER, audience: str = LOCAL_AUDIENCE
    ) -> None:
        self.directory = directory
        self.issuer = issuer
        self.audience = audience
        self._key = self._load_or_create()

    def _load_or_create(self) -> ec.EllipticCurvePrivateKey:
        path = self.directory / KEY_FILE
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # Written under a temporary name and renamed, so a concurrent reader never sees half.
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            os.replace(tmp, path)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} is not an EC private key")
        return loaded

    @property
    def public_key_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def config(self) -> IssuerConfig:
        return IssuerConfig(
            issuer=self.issuer, audience=self.audience, public_keys=(self.public_key_pem,)
        )

    def issuers_json(self) -> str:
        """The AUTH_ISSUERS value that trusts this issuer."""
        return json.dumps([self.config.model_dump(exclude_none=True, mode="json")])

    def mint(
        self,
        role: Role | str,
        *,
        municipality: str | None = None,
        schools: Iterable[str] = (),
        subject: str | None = None,
        client: str | None = None,
        ttl_seconds: int = 3600,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject or f"local-{Role(role).value}-{uuid.uuid4().hex[:8]}",
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            CLAIM_ROLE: Role(role).value,
        }
        if municipality is not None:
            claims[CLAIM_MUNICIPALITY] = municipality
        school_list = list(schools)
        if school_list:
            claims[CLAIM_SCHOOLS] = school_list
        if client is not None:
            claims["azp"] = client
        claims |= extra or {}
        return jwt.encode(claims, self._key, algorithm="ES256")
