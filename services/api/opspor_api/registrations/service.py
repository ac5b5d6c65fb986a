"""Accepting registrations: validate everything first, then store events, current state and
outbox rows in the caller's transaction. A request with any bad item stores nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from opspor_api.calendars import why_not_school_day
from opspor_api.config.repository import ConfigRepository
from opspor_api.errors import Conflict, FieldError, InvalidInput, NotFound, field_error
from opspor_api.models import RegistrationEvent
from opspor_api.registrations.repository import RegistrationRepository
from opspor_api.registrations.schemas import (
    IngestResult,
    MonthAbsence,
    RegistrationIn,
    RegistrationOut,
    RetractionIn,
)
from opspor_api.settings import ApiSettings
from opspor_api.tenancy import may_use_school, pupil_visible, registration_visible, school_visible
from opspor_shared.auth import Principal
from opspor_shared.events import (
    REGISTRATION_RECORDED,
    REGISTRATION_RETRACTED,
    CloudEvent,
    RegistrationData,
)
from opspor_shared.logging import correlation_id
from opspor_shared.outbox import OutboxMessage
from opspor_shared.reference import CalendarCache, ReferenceRepository
from opspor_shared.retention import RetentionWindow

Item = RegistrationIn | RetractionIn
Loc = tuple[str | int, ...]


def _data(item: Item) -> RegistrationData:
    if isinstance(item, RetractionIn):
        return RegistrationData(**item.model_dump(), category=None, extent=None, retracted=True)
    return RegistrationData(**item.model_dump(), retracted=False)


def _same(stored: RegistrationEvent, new: RegistrationData) -> bool:
    # Model equality compares values: 1 == 1.0000 and the same instant in any time zone.
    return RegistrationData.model_validate(stored, from_attributes=True) == new


async def _validate(
    config: ConfigRepository,
    calendars: CalendarCache,
    window: RetentionWindow,
    principal: Principal,
    items: Sequence[Item],
    locs: Sequence[Loc],
) -> None:
    errors: list[FieldError] = []
    reference = ReferenceRepository(config.session)
    found = await reference.schools(sorted({i.school_id for i in items}))
    # Another tenant's school is refused exactly like a school that does not exist.
    schools = {
        sid: ref
        for sid, ref in found.items()
        if may_use_school(principal, sid, ref.municipality_id)
    }
    cals = await reference.calendars({s: ref.country for s, ref in schools.items()}, calendars)
    for item, loc in zip(items, locs, strict=True):
        if item.school_id not in schools:
            errors.append(field_error((*loc, "school_id"), f"unknown school {item.school_id!r}"))
        if item.date < window.cutoff:
            # Accepting it would only feed the purge; the worker would ignore it anyway.
            errors.append(
                field_error(
                    (*loc, "date"),
                    f"{item.date} is older than the retention period of "
                    f"{window.registration_days} days (the earliest accepted date is "
                    f"{window.cutoff})",
                )
            )
        elif (
            item.school_id in schools
            and isinstance(item, RegistrationIn)
            and not cals[item.school_id].is_school_day(item.date)
        ):
            reason = why_not_school_day(cals[item.school_id], item.date)
            errors.append(
                field_error(
                    (*loc, "date"), f"{item.date} is not a school day at this school ({reason})"
                )
            )
    if errors:
        raise InvalidInput(f"{len(errors)} invalid field(s); nothing was stored", errors)


async def ingest(
    repo: RegistrationRepository,
    config: ConfigRepository,
    calendars: CalendarCache,
    settings: ApiSettings,
    window: RetentionWindow,
    principal: Principal,
    items: Sequence[Item],
    locs: Sequence[Loc],
) -> IngestResult:
    await _validate(config, calendars, window, principal, items, locs)

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
        raise Conflict("event ids reused with different content; nothing was stored", errors)

    new_ids = await repo.insert_events([d.model_dump() for d, _ in by_id.values()])
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
            raise Conflict("event ids reused with different content; nothing was stored", errors)
        dup_ids.extend(old_ids)

    fresh = [by_id[e][0] for e in by_id if e in new_ids]
    await repo.apply_current(fresh)
    cid = correlation_id.get()
    await repo.publish(
        [
            OutboxMessage(
                topic=settings.registrations_topic,
                key=d.pupil_id,
                event=CloudEvent(
                    id=d.event_id,
                    source=f"/opspor/api/schools/{d.school_id}",
                    type=REGISTRATION_RETRACTED if d.retracted else REGISTRATION_RECORDED,
                    time=d.recorded_at,
                    subject=d.pupil_id,
                    data=d.model_dump(mode="json"),
                ),
                correlation_id=cid,
            )
            for d in fresh
        ]
    )
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
