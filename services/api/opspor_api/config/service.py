"""Municipalities, schools and school calendars."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from opspor_api.bodies import parse, path_value, refuse, valid_fields
from opspor_api.cases.repository import CaseRepository
from opspor_api.cases.service import models_of
from opspor_api.config.repository import ConfigRepository
from opspor_api.config.schemas import (
    ClosureIn,
    MunicipalityIn,
    MunicipalityOut,
    NonSchoolDay,
    SchoolIn,
    SchoolOut,
    SchoolYearIn,
    SchoolYearOut,
)
from opspor_api.errors import FieldError, InvalidInput, NotFound, field_error
from opspor_api.models import Municipality, School, SchoolYearRow
from opspor_api.routing import service as routing_service
from opspor_api.routing.repository import RoutingRepository
from opspor_api.validation import IDENTIFIER, YEAR_LABEL
from opspor_shared.auth import Principal
from opspor_shared.calendar import SchoolCalendar
from opspor_shared.casemodels import default_model_id
from opspor_shared.engine import builtin_packs
from opspor_shared.reference import PackCache, school_year_from_row

LABEL = re.compile(r"^(\d{4})-(\d{4})$")


async def _check_packs(
    repo: ConfigRepository, pack_ids: list[str] | None, municipality_id: str
) -> list[FieldError]:
    """Every pack must be shipped or stored by this municipality, and named once."""
    if pack_ids is None:
        return []
    usable = set(builtin_packs()) | set(await repo.stored_pack_ids(municipality_id))
    errors = []
    for i, pack_id in enumerate(pack_ids):
        if pack_id not in usable:
            known = ", ".join(sorted(usable))
            errors.append(field_error(("rule_packs", i), f"unknown rule pack; known: {known}"))
        elif pack_id in pack_ids[:i]:
            errors.append(field_error(("rule_packs", i), "names a pack twice"))
    return errors


async def _check_case_model(
    repo: ConfigRepository, model_id: str | None, municipality_id: str
) -> list[FieldError]:
    if model_id is None:
        return []
    known = await models_of(CaseRepository(repo.session), municipality_id)
    if model_id in known:
        return []
    return [field_error(("case_model",), f"unknown case model; known: {', '.join(sorted(known))}")]


async def _refuse_unroutable(
    repo: ConfigRepository,
    municipality_id: str,
    municipality: dict[str, Any],
    schools: dict[str, dict[str, Any]],
) -> None:
    """A pack whose levels the routing cannot deliver is refused when it is chosen, not
    discovered when the first concern of that level finds no recipient (issue 9)."""
    found = await routing_service.unreachable(
        RoutingRepository(repo.session), PackCache(), municipality_id, municipality, schools
    )
    if schools:
        found = [f for f in found if f[0] in schools]
    if errors := routing_service.nowhere_errors(found, "rule_packs"):
        raise InvalidInput(
            "a level of the chosen rule packs would reach nobody: set its mailbox, or route it "
            "(PUT .../routing); nothing was changed",
            errors,
        )


def municipality_out(m: Municipality) -> MunicipalityOut:
    return MunicipalityOut.model_validate(m, from_attributes=True)


def _own_municipality(principal: Principal, municipality_id: str) -> None:
    if municipality_id != principal.municipality:
        raise NotFound(f"no municipality {municipality_id!r}")


async def _own_school(repo: ConfigRepository, principal: Principal, school_id: str) -> School:
    school = await repo.school(school_id)
    if school is None or school.municipality_id != principal.municipality:
        raise NotFound(f"no school {school_id!r}")
    return school


async def put_municipality(
    repo: ConfigRepository, principal: Principal, municipality_id: str, raw: object
) -> tuple[MunicipalityOut, bool]:
    errors: list[FieldError] = []
    path_value(errors, "municipality_id", municipality_id, IDENTIFIER)
    _own_municipality(principal, municipality_id)
    data, body_errors = parse(MunicipalityIn, raw)
    errors += body_errors
    # The packs are judged even when other fields are wrong: every error in one answer.
    fields = valid_fields(MunicipalityIn, raw, errors, (), ("rule_packs", "case_model"))
    errors += await _check_packs(repo, fields.get("rule_packs"), municipality_id)
    errors += await _check_case_model(repo, fields.get("case_model"), municipality_id)
    refuse(errors, "nothing was changed")
    assert data is not None
    changes = {
        "rule_packs": data.rule_packs,
        "ppr_mailbox": data.ppr_mailbox,
        "unit_mailbox": data.unit_mailbox,
    }
    await _refuse_unroutable(repo, municipality_id, changes, {})
    created = await repo.upsert_municipality({"id": municipality_id, **data.model_dump()})
    return MunicipalityOut(id=municipality_id, **data.model_dump()), created


async def get_municipality(
    repo: ConfigRepository, principal: Principal, municipality_id: str
) -> MunicipalityOut:
    _own_municipality(principal, municipality_id)
    m = await repo.municipality(municipality_id)
    if m is None:
        raise NotFound(f"no municipality {municipality_id!r}")
    return municipality_out(m)


def school_out(school_id: str, s: SchoolIn, m: Municipality) -> SchoolOut:
    return SchoolOut.model_validate(
        {
            "id": school_id,
            "municipality_id": s.municipality_id,
            "name": s.name,
            "country": m.country,
            "timezone": s.timezone,
            "language": s.language or m.language,
            "rule_packs": s.rule_packs,
            "effective_rule_packs": s.rule_packs or m.rule_packs,
            "mailbox": s.mailbox,
            "case_model": s.case_model,
            "effective_case_model": s.case_model or m.case_model or default_model_id(m.country),
        }
    )


async def put_school(
    repo: ConfigRepository, principal: Principal, school_id: str, raw: object
) -> tuple[SchoolOut, bool]:
    errors: list[FieldError] = []
    if path_value(errors, "school_id", school_id, IDENTIFIER) is not None:
        existing = await repo.school(school_id)
        # School ids are global: another municipality's school cannot be taken over or probed.
        if existing is not None and existing.municipality_id != principal.municipality:
            raise NotFound(f"no school {school_id!r}")
    data, body_errors = parse(SchoolIn, raw)
    errors += body_errors
    fields = valid_fields(
        SchoolIn, raw, errors, (), ("municipality_id", "rule_packs", "case_model")
    )
    m = None
    if (municipality_id := fields.get("municipality_id")) is not None:
        m = await repo.municipality(municipality_id)
        if m is None or m.id != principal.municipality:
            errors.append(
                field_error(("municipality_id",), "unknown municipality; create it first")
            )
        else:
            errors += await _check_packs(repo, fields.get("rule_packs"), municipality_id)
            errors += await _check_case_model(repo, fields.get("case_model"), municipality_id)
    refuse(errors, "nothing was changed")
    assert data is not None and m is not None
    changes = {"rule_packs": data.rule_packs, "mailbox": data.mailbox}
    await _refuse_unroutable(repo, m.id, {}, {school_id: changes})
    created = await repo.upsert_school({"id": school_id, **data.model_dump()})
    if created is None:
        raise NotFound(f"no school {school_id!r}")
    return school_out(school_id, data, m), created


async def get_school(repo: ConfigRepository, principal: Principal, school_id: str) -> SchoolOut:
    s = await _own_school(repo, principal, school_id)
    m = await repo.municipality(s.municipality_id)
    assert m is not None
    return school_out(s.id, SchoolIn.model_validate(s, from_attributes=True), m)


def _label_errors(label: str) -> list[FieldError]:
    match = LABEL.match(label)
    if not match or int(match[2]) != int(match[1]) + 1:
        return [field_error(("label",), "must look like 2026-2027 (two consecutive years)")]
    return []


def _year_errors(label: str, data: SchoolYearIn, others: list[SchoolYearRow]) -> list[FieldError]:
    errors = []
    if data.last_day < data.first_day:
        errors.append(field_error(("last_day",), "is before first_day"))
    elif (data.last_day - data.first_day).days > 400:
        errors.append(field_error(("last_day",), "a school year spans at most 400 days"))
    for i, closure in enumerate(data.closures):
        if closure.first_day < data.first_day or closure.last_day > data.last_day:
            errors.append(field_error(("closures", i), "lies outside the school year"))
    for i, extra in enumerate(data.extra_days):
        if not data.first_day <= extra <= data.last_day:
            errors.append(field_error(("extra_days", i), "lies outside the school year"))
    for other in others:
        if (
            other.label != label
            and other.first_day <= data.last_day
            and data.first_day <= other.last_day
        ):
            errors.append(field_error(("first_day",), f"overlaps the school year {other.label}"))
    return errors


def _year_out(
    label: str, row: SchoolYearRow, country: str, language: str | None = None
) -> SchoolYearOut:
    year = school_year_from_row(
        {
            "first_day": row.first_day,
            "last_day": row.last_day,
            "closures": row.closures,
            "extra_days": row.extra_days,
        }
    )
    calendar = SchoolCalendar(country, [year])
    holidays = calendar.public_holidays(row.first_day, row.last_day, language)
    return SchoolYearOut(
        label=label,
        first_day=row.first_day,
        last_day=row.last_day,
        closures=[ClosureIn.model_validate(c) for c in row.closures],
        extra_days=[date.fromisoformat(d) for d in row.extra_days],
        school_days=len(calendar.days),
        public_holidays=[
            NonSchoolDay(date=d, reason=name)
            for d, name in sorted(holidays.items())
            if d.weekday() < 5
        ],
    )


async def put_school_year(
    repo: ConfigRepository, principal: Principal, school_id: str, label: str, raw: object
) -> tuple[SchoolYearOut, bool]:
    errors: list[FieldError] = []
    if path_value(errors, "school_id", school_id, IDENTIFIER) is not None:
        await _own_school(repo, principal, school_id)
    if path_value(errors, "label", label, YEAR_LABEL) is not None:
        errors += _label_errors(label)
    data, body_errors = parse(SchoolYearIn, raw)
    errors += body_errors
    if data is not None:
        errors += _year_errors(label, data, await repo.school_years([school_id]))
    if errors:
        raise InvalidInput(f"school year {label} is not valid; nothing was changed", errors)
    assert data is not None
    created = await repo.upsert_school_year(
        {
            "school_id": school_id,
            "label": label,
            "first_day": data.first_day,
            "last_day": data.last_day,
            "closures": [c.model_dump(mode="json") for c in data.closures],
            "extra_days": [d.isoformat() for d in sorted(set(data.extra_days))],
        }
    )
    return await get_school_year(repo, principal, school_id, label), created


async def get_school_year(
    repo: ConfigRepository, principal: Principal, school_id: str, label: str
) -> SchoolYearOut:
    school = await _own_school(repo, principal, school_id)
    for row in await repo.school_years([school_id]):
        if row.label == label:
            return _year_out(label, row, *await _country(repo, school))
    raise NotFound(f"school {school_id!r} has no school year {label!r}")


async def list_school_years(
    repo: ConfigRepository, principal: Principal, school_id: str
) -> list[SchoolYearOut]:
    school = await _own_school(repo, principal, school_id)
    country, language = await _country(repo, school)
    return [_year_out(r.label, r, country, language) for r in await repo.school_years([school_id])]


async def _country(repo: ConfigRepository, school: School) -> tuple[str, str]:
    """The school's country and language (its own, else its municipality's)."""
    m = await repo.municipality(school.municipality_id)
    assert m is not None  # foreign key
    return m.country, school.language or m.language
