"""Webhook signing secrets encrypted at rest (WEBHOOK_SECRET_KEYS).

The api stores a webhook's secret and the alerter signs with it, so both need the secret
itself, not a hash. With WEBHOOK_SECRET_KEYS set (the same value on both), the stored column
holds `fernet:<token>`: Fernet from `cryptography` (AES-128-CBC with HMAC-SHA256, a timestamped
and authenticated token), so a database dump or backup carries no usable secret. Several keys,
comma-separated, allow rotation: the first seals, every one opens (MultiFernet); after adding a
new first key, `python -m opspor_api.reseal` seals every stored secret with it, and the
old key can go.

Without keys a secret is stored as given (a deployment that has not set them yet; `make run`
makes a key), and a secret stored as given stays readable after keys are set, until it is
sealed by a PUT or the reseal command. Secrets are `whsec_...` (the api refuses anything else),
so a stored value is unambiguous.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SEALED = "fernet:"


class SecretUnreadable(Exception):
    """A sealed secret that no configured key opens. The message names the setting, never the
    secret."""


def key_list(setting: str | None) -> list[str]:
    """The keys of a WEBHOOK_SECRET_KEYS value (comma-separated; spaces and empty items
    ignored)."""
    return [k.strip() for k in (setting or "").split(",") if k.strip()]


def keys_problem(keys: Sequence[str]) -> str | None:
    """Why `keys` cannot seal, in words that do not quote a key; None when they can."""
    if not keys:
        return "names no key (leave it unset to store secrets as given)"
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            return (
                f"key {number} is not a Fernet key (32 bytes in URL-safe base64, as "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'`"
                " makes)"
            )
    return None


class SecretBox:
    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None

    @classmethod
    def of(cls, setting: str | None) -> SecretBox:
        """From WEBHOOK_SECRET_KEYS (comma-separated; unset or empty: no encryption)."""
        return cls(key_list(setting))

    @property
    def seals(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        """The secret as it is stored: sealed with the first key, or as given without keys."""
        if self._fernet is None:
            return secret
        return SEALED + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret of a stored value, sealed or stored as given."""
        if not stored.startswith(SEALED):
            return stored
        if self._fernet is None:
            raise SecretUnreadable("the secret is sealed, and WEBHOOK_SECRET_KEYS is not set")
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED).encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "no key in WEBHOOK_SECRET_KEYS opens the secret (its key was removed?)"
            ) from None
