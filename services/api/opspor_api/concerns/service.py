from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date

from pydantic import ValidationError

from opspor_api.cases.repository import CaseRepository
from opspor_api.cases.service import sees_case as cases_visible
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.concerns.schemas import (
    AcknowledgementIn,
    AcknowledgementOut,
    ConcernOut,
    ConcernPage,
)
from opspor_api.cursors import decode_cursor, encode_cursor
from opspor_api.errors import InvalidInput, NotFound, field_error
from opspor_api.models import ConcernAcknowledgement, ConcernView
from opspor_api.tenancy import concern_visible, pupil_visible, school_visible
from opspor_shared.auth import Principal
from opspor_shared.events import CloudEvent, ConcernData
from opspor_shared.kafka import Delivered
from opspor_shared.logging import get_logger
from opspor_shared.retention import RetentionWindow

log = get_logger(__name__)


def concern_out(row: ConcernView, ack: ConcernAcknowledgement | None = None) -> ConcernOut:
    out = ConcernOut.model_validate(row, from_attributes=True)
    if ack is not None:
        out.acknowledgement = AcknowledgementOut.model_validate(
            {"as": ack.kind, "case_id": ack.case_id, "by": ack.by, "at": ack.at}
        )
    return out


async def _with_acks(repo: ConcernRepository, rows: Sequence[ConcernView]) -> list[ConcernOut]:
    acks = await repo.acknowledgements([r.concern_id for r in rows])
    return [concern_out(r, acks.get(r.concern_id)) for r in rows]


def _cursor_key(text: str) -> tuple[date, uuid.UUID]:
    day, concern = text.split("|")
    return date.fromisoformat(day), uuid.UUID(concern)


async def pupil_concerns(
    repo: ConcernRepository, principal: Principal, pupil_id: str, status: str | None
) -> list[ConcernOut]:
    if not await pupil_visible(repo.session, principal, pupil_id):
        raise NotFound(f"no pupil {pupil_id!r}")
    rows = await repo.for_pupil(pupil_id, status, await concern_visible(repo.session, principal))
    return await _with_acks(repo, rows)


async def school_page(
    repo: ConcernRepository,
    principal: Principal,
    school_id: str,
    status: str | None,
    level: str | None,
    cursor: str | None,
    limit: int,
) -> ConcernPage:
    if not await school_visible(repo.session, principal, school_id):
        raise NotFound(f"no school {school_id!r}")
    after = decode_cursor(cursor, _cursor_key) if cursor else None
    rows = await repo.page_for_school(
        school_id, status, level, after, limit + 1, await concern_visible(repo.session, principal)
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return ConcernPage(
        items=await _with_acks(repo, rows),
        next_cursor=(
            encode_cursor(f"{rows[-1].crossing_date.isoformat()}|{rows[-1].concern_id}")
            if more and rows
            else None
        ),
    )


async def active_counts(repo: ConcernRepository, principal: Principal) -> dict[str, dict[str, int]]:
    """Active concerns per visible school and level: numbers only, no pupil data."""
    counts: dict[str, dict[str, int]] = {}
    for school_id, level, n in await repo.active_counts(
        await concern_visible(repo.session, principal)
    ):
        counts.setdefault(school_id, {})[level] = n
    return counts


async def get_concern(
    repo: ConcernRepository, principal: Principal, concern_id: uuid.UUID
) -> ConcernOut:
    row = await repo.one(concern_id, await concern_visible(repo.session, principal))
    if row is None:
        raise NotFound(f"no concern {concern_id}")
    return (await _with_acks(repo, [row]))[0]


async def acknowledge(
    repo: ConcernRepository,
    cases: CaseRepository,
    principal: Principal,
    concern_id: uuid.UUID,
    body: AcknowledgementIn,
) -> ConcernOut:
    """Records that the principal saw the concern, or handles it in one of the pupil's cases
    at the concern's school (a case the principal may see)."""
    concern = await get_concern(repo, principal, concern_id)
    problems = []
    if body.as_ == "handled" and body.case_id is None:
        problems.append(field_error(("case_id",), "name the case that handles the concern"))
    if body.case_id is not None:
        case = await cases.get(body.case_id)
        if (
            case is None
            or (case.pupil_id, case.school_id) != (concern.pupil_id, concern.school_id)
            or not cases_visible(principal, case, await cases.entries(case.id))
        ):
            problems.append(
                field_error(("case_id",), "is not a case of this pupil at the concern's school")
            )
    if problems:
        raise InvalidInput("the acknowledgement was not recorded", problems)
    await repo.acknowledge(concern_id, body.as_, body.case_id, principal.subject)
    await repo.session.flush()
    return await get_concern(repo, principal, concern_id)


def _row(data: ConcernData, event: CloudEvent) -> dict[str, object]:
    return {
        "concern_id": uuid.UUID(data.concern_id),
        "revision": data.revision,
        "status": data.status,
        "pupil_id": data.pupil_id,
        "school_id": data.school_id,
        "municipality_id": data.municipality_id,
        "level": data.level,
        "crossing_date": data.crossing_date,
        "pack_id": data.explanation.pack_id,
        "rule_id": data.explanation.rule_id,
        "rule_version": data.explanation.rule_version,
        "explanation": data.explanation.model_dump(mode="json"),
        "withdrawn_at": event.time if data.status == "withdrawn" else None,
    }


async def project(
    repo: ConcernRepository, batch: list[Delivered], window: RetentionWindow
) -> tuple[list[CloudEvent], list[tuple[ConcernData, str]]]:
    """Applies concern events to the api's read model (idempotent, order-insensitive).

    Skips events that can only be replays of concerns the purge has removed (see
    RetentionWindow.event_outlived). Returns the events whose data is not a concern, for the
    dead-letter topic, and each valid event's data with its type, in order, for the cases.
    """
    latest: dict[str, tuple[ConcernData, CloudEvent]] = {}
    refused: list[CloudEvent] = []
    applied: list[tuple[ConcernData, str]] = []
    for delivered in batch:
        try:
            data = ConcernData.model_validate(delivered.event.data)
        except ValidationError:
            log.warning("concern_event_invalid", event_id=delivered.event.id)
            refused.append(delivered.event)
            continue
        if window.event_outlived(data.crossing_date, delivered.event.time):
            log.info("concern_event_past_retention", event_id=delivered.event.id)
            continue
        applied.append((data, delivered.event.type))
        held = latest.get(data.concern_id)
        if held is None or held[0].revision < data.revision:
            latest[data.concern_id] = (data, delivered.event)
    if latest:
        await repo.apply([_row(d, e) for d, e in latest.values()])
    return refused, applied
