"""Opaque cursors for keyset pagination: the last row's key, base64url without padding."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from opspor_api.errors import InvalidInput, field_error

T = TypeVar("T")


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parse: Callable[[str], T]) -> T:
    """The key `parse` reads from the cursor; anything else is a 422 naming the parameter."""
    try:
        return parse(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "the cursor is not one this api handed out",
            [field_error(("query", "cursor"), "invalid cursor; start again without it")],
        ) from exc
