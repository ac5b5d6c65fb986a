"""Accepting registrations: validate everything first, then store events, current state and
outbox rows in the caller's transaction. A request with any bad item stores nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from opspor_api.bodies import bad_fields, parse, refuse, valid_fields
from opspor_api.calendars import why_not_school_day
from opspor_api.config.repository import ConfigRepository
from opspor_api.errors import Conflict, FieldError, NotFound, field_error
from opspor_api.models import RegistrationEvent
from opspor_api.registrations.metrics import ACCEPTED, REFUSED
from opspor_api.registrations.repository import RegistrationRepository
from opspor_api.registrations.schemas import (
    BatchIn,
    IngestResult,
    MonthAbsence,
    RegistrationIn,
    RegistrationOut,
    RetractionIn,
)
from opspor_api.settings import ApiSettings
from opspor_api.tenancy import may_use_school, pupil_visible, registration_visible, school_visible
from opspor_shared.auth import Principal
from opspor_shared.events import RegistrationData, registration_event
from opspor_shared.logging import correlation_id
from opspor_shared.outbox import OutboxMessage
from opspor_shared.reference import CalendarCache, ReferenceRepository
from opspor_shared.retention import RetentionWindow

Item = RegistrationIn | RetractionIn
Loc = tuple[str | int, ...]


def _data(item: Item) -> RegistrationData:
    if isinstance(item, RetractionIn):
        return RegistrationData.model_validate(
            {**item.__dict__, "category": None, "extent": None, "retracted": True}
        )
    return RegistrationData.model_validate({**item.__dict__, "retracted": False})


def _same(stored: RegistrationEvent, new: RegistrationData) -> bool:
    # Model equality compares values: 1 == 1.0000 and the same instant in any time zone.
    return RegistrationData.model_validate(stored, from_attributes=True) == new


@dataclass(frozen=True)
class Facts:
    """What the domain checks need of one item; None where the schema refused the field."""

    loc: Loc
    school_id: str | None
    date: date | None
    registration: bool  # a retraction needs a known school but not a school day


def facts_of(
    model: type[Item], raw: object, schema_errors: Sequence[FieldError], loc: Loc
) -> Facts:
    fields = valid_fields(model, raw, schema_errors, loc, ("school_id", "date"))
    return Facts(loc, fields.get("school_id"), fields.get("date"), model is RegistrationIn)


async def domain_errors(
    config: ConfigRepository,
    calendars: CalendarCache,
    window: RetentionWindow,
    principal: Principal,
    facts: Sequence[Facts],
) -> list[FieldError]:
    errors: list[FieldError] = []
    reference = ReferenceRepository(config.session)
    found = await reference.schools(sorted({f.school_id for f in facts if f.school_id}))
    # Another tenant's school is refused exactly like a school that does not exist.
    schools = {
        sid: ref
        for sid, ref in found.items()
        if may_use_school(principal, sid, ref.municipality_id)
    }
    cals = await reference.calendars({s: ref.country for s, ref in schools.items()}, calendars)
    for f in facts:
        loc = f.loc
        if f.school_id is not None and f.school_id not in schools:
            REFUSED.labels("unknown_school").inc()
            errors.append(field_error((*loc, "school_id"), f"unknown school {f.school_id!r}"))
        if f.date is None:
            continue
        if f.date < window.cutoff:
            # Accepting it would only feed the purge; the worker would ignore it anyway.
            REFUSED.labels("before_retention").inc()
            errors.append(
                field_error(
                    (*loc, "date"),
                    f"{f.date} is older than the retention period of "
                    f"{window.registration_days} days (the earliest accepted date is "
                    f"{window.cutoff})",
                )
            )
        elif (
            f.school_id in schools
            and f.registration
            and not cals[f.school_id].is_school_day(f.date)
        ):
            reason = why_not_school_day(cals[f.school_id], f.date)
            REFUSED.labels("not_school_day").inc()
            errors.append(
                field_error(
                    (*loc, "date"), f"{f.date} is not a school day at this school ({reason})"
                )
            )
    return errors


async def ingest_body(
    repo: RegistrationRepository,
    config: ConfigRepository,
    calendars: CalendarCache,
    settings: ApiSettings,
    window: RetentionWindow,
    principal: Principal,
    raw: object,
    model: type[Item],
    *,
    batch: bool,
) -> tuple[IngestResult, list[Item]]:
    """Checks a request body (one item, or {"items": [...]}) against the schema and the domain
    at once, then stores it; any error stores nothing and every error is named."""
    items: list[Item] = []
    locs: list[Loc] = []
    facts: list[Facts] = []
    if batch:
        body, errors = parse(BatchIn, raw)
        raw_items = raw.get("items") if isinstance(raw, dict) else None
        # A wrong list (missing, too long, not a list) has no items worth judging one by one.
        if body is not None:
            items = list(body.items)
            locs = [("items", i) for i in range(len(items))]
        elif isinstance(raw_items, list) and bad_fields(errors, ("items",)) is not None:
            for i, raw_item in enumerate(raw_items):
                facts.append(facts_of(model, raw_item, errors, ("items", i)))
    else:
        one, errors = parse(model, raw)
        if one is not None:
            items, locs = [one], [()]
        else:
            facts.append(facts_of(model, raw, errors, ()))
    facts += [
        Facts(loc, i.school_id, i.date, isinstance(i, RegistrationIn))
        for i, loc in zip(items, locs, strict=True)
    ]
    if errors:
        REFUSED.labels("invalid_field").inc(len(errors))
    refuse(errors + await domain_errors(config, calendars, window, principal, facts))
    return await _store(repo, settings, items, locs), items


async def _store(
    repo: RegistrationRepository,
    settings: ApiSettings,
    items: Sequence[Item],
    locs: Sequence[Loc],
) -> IngestResult:

    # The same event id twice in one request: identical copies are duplicates, anything else
    # is a producer bug we must not guess about.
    by_id: dict[str, tuple[RegistrationData, Loc]] = {}
    dup_ids: list[str] = []
    errors: list[FieldError] = []
    for item, loc in zip(items, locs, strict=True):
        data = _data(item)
        if (seen := by_id.get(data.event_id)) is None:
            by_id[data.event_id] = (data, loc)
        elif seen[0] == data:
            dup_ids.append(data.event_id)
        else:
            errors.append(
                field_error(
                    (*loc, "event_id"), "repeats another item's event_id with other content"
                )
            )
    if errors:
        REFUSED.labels("event_id_conflict").inc(len(errors))
        raise Conflict("event ids reused with different content; nothing was stored", errors)

    # A conflict found below raises, and the request's transaction rolls all of it back.
    new_ids = await repo.store([d for d, _ in by_id.values()])
    old_ids = [e for e in by_id if e not in new_ids]
    if old_ids:
        stored = await repo.events(old_ids)
        for event_id in old_ids:
            data, loc = by_id[event_id]
            if not _same(stored[event_id], data):
                errors.append(
                    field_error((*loc, "event_id"), "was stored earlier with other content")
                )
        if errors:
            REFUSED.labels("event_id_conflict").inc(len(errors))
            raise Conflict("event ids reused with different content; nothing was stored", errors)
        dup_ids.extend(old_ids)

    fresh = [by_id[e][0] for e in by_id if e in new_ids]
    cid = correlation_id.get()
    await repo.publish(
        [
            OutboxMessage(
                topic=settings.registrations_topic,
                key=d.pupil_id,
                event=registration_event(d),
                correlation_id=cid,
            )
            for d in fresh
        ]
    )
    ACCEPTED.labels("stored").inc(len(fresh))
    ACCEPTED.labels("duplicate").inc(len(dup_ids))
    return IngestResult(inserted=len(fresh), duplicates=len(dup_ids), duplicate_event_ids=dup_ids)


async def pupil_registrations(
    repo: RegistrationRepository, principal: Principal, pupil_id: str
) -> list[RegistrationOut]:
    """A pupil's current registrations at the principal's schools (retracted ones left out)."""
    if not await pupil_visible(repo.session, principal, pupil_id):
        raise NotFound(f"no pupil {pupil_id!r}")
    rows = await repo.current_for_pupil(pupil_id, registration_visible(principal))
    return [
        RegistrationOut.model_validate(r, from_attributes=True) for r in rows if not r.retracted
    ]


async def school_absence_by_month(
    repo: RegistrationRepository, principal: Principal, school_id: str, first: date, last: date
) -> list[MonthAbsence]:
    """Absence days (sum of extents) per month and category at a school; no pupil ids."""
    if not await school_visible(repo.session, principal, school_id):
        raise NotFound(f"no school {school_id!r}")
    return [
        MonthAbsence(month=month, category=category, days=days)
        for month, category, days in await repo.absence_by_month(school_id, first, last)
    ]
