"""Field types shared by the api's schemas."""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, StringConstraints

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
Slot = Annotated[
    str, StringConstraints(min_length=1, max_length=16, pattern=r"^(day|am|pm|[1-9][0-9]?)$")
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]

_MAILBOX = re.compile(r"^[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}$")


def _mailbox(value: str) -> str:
    if not _MAILBOX.match(value):
        raise ValueError("must be an e-mail address such as skole@sikkerpost.aalborg.dk")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone such as Europe/Copenhagen") from exc
    return value


Mailbox = Annotated[str, StringConstraints(max_length=254), AfterValidator(_mailbox)]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_timezone)]
