"""Field types shared by the api's schemas."""

from __future__ import annotations

import calendar
import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Path
from pydantic import (
    AfterValidator,
    SkipValidation,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
)

from opspor_shared.text import control_problem

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"

# Data minimisation: pupils are known by the school system's id, never by a national ID number.
# Digits not preceded or followed by another digit, so "elev-0101901234" is caught too.
_CPR = re.compile(r"(?<!\d)(\d{2})(\d{2})(\d{2})[- ]?\d{4}(?!\d)")
_FNR = re.compile(r"(?<!\d)(\d{6})[- ]?(\d{5})(?!\d)")
_FNR_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_FNR_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _valid_day(day: int, month: int) -> bool:
    # The year (and so the century) is not known from six digits: 29 February always passes.
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(2000, month)[1]


def _control(digits: list[int], weights: tuple[int, ...]) -> int | None:
    rest = 11 - sum(d * w for d, w in zip(digits, weights, strict=False)) % 11
    return 0 if rest == 11 else None if rest == 10 else rest


def _fodselsnummer(digits: str) -> bool:
    d = [int(c) for c in digits]
    day, month = d[0] * 10 + d[1], d[2] * 10 + d[3]
    day -= 40 if day > 40 else 0  # D-number
    month -= 40 if month > 40 else 0  # H-number
    if not _valid_day(day, month):
        return False
    return _control(d[:9], _FNR_K1) == d[9] and _control(d[:10], _FNR_K2) == d[10]


def national_id_kind(text: str) -> str | None:
    """Names the kind of national ID number the text contains, if any."""
    for match in _FNR.finditer(text):
        if _fodselsnummer(match[1] + match[2]):
            return "a Norwegian fødselsnummer"
    for match in _CPR.finditer(text):
        if _valid_day(int(match[1]), int(match[2])):
            return "a Danish CPR number"
    return None


def _no_national_id(value: str) -> str:
    # The message never quotes the value: error bodies end up in client logs.
    if (kind := national_id_kind(value)) is not None:
        raise ValueError(
            f"looks like {kind}; send the school system's pupil id, never a national ID number"
        )
    return value


NoNationalId = AfterValidator(_no_national_id)


def _no_control(value: str) -> str:
    if (problem := control_problem(value)) is not None:
        raise ValueError(problem)
    return value


NoControl = AfterValidator(_no_control)
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
PupilId = Annotated[Identifier, NoNationalId]
PupilPathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN), NoNationalId]
# For routes that check their path and body together (opspor_api.bodies): the same rules,
# applied in the route instead of before it.
IdPathUnchecked = Annotated[
    str, Path(min_length=1, max_length=64, pattern=ID_PATTERN), SkipValidation
]
PupilPathUnchecked = Annotated[PupilPathId, SkipValidation]
IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
YEAR_LABEL_PATTERN = r"^\d{4}-\d{4}$"
YearLabelPathUnchecked = Annotated[
    str,
    Path(min_length=9, max_length=9, pattern=YEAR_LABEL_PATTERN, examples=["2026-2027"]),
    SkipValidation,
]
YEAR_LABEL: TypeAdapter[str] = TypeAdapter(
    Annotated[str, StringConstraints(min_length=9, max_length=9, pattern=YEAR_LABEL_PATTERN)]
)
PUPIL_ID: TypeAdapter[str] = TypeAdapter(PupilId)
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
Slot = Annotated[
    str, StringConstraints(min_length=1, max_length=16, pattern=r"^(day|am|pm|[1-9][0-9]?)$")
]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
    NoControl,
    NoNationalId,
]
FreeText = Annotated[str, StringConstraints(max_length=200), NoControl, NoNationalId]

# Written so that Python and ECMAScript (JSON Schema) read it alike: no \s, whose meaning differs.
MAILBOX_PATTERN = r'^[^@ \t\n\r\f\v<>"]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}$'
_MAILBOX = re.compile(MAILBOX_PATTERN)


def _mailbox(value: str) -> str:
    if not _MAILBOX.fullmatch(value):
        raise ValueError("must be an e-mail address such as skole@sikkerpost.aalborg.dk")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone such as Europe/Copenhagen") from exc
    return value


Mailbox = Annotated[
    str,
    StringConstraints(max_length=254),
    AfterValidator(_mailbox),
    WithJsonSchema(
        {"type": "string", "minLength": 6, "maxLength": 254, "pattern": MAILBOX_PATTERN},
        mode="validation",
    ),
]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_timezone)]
