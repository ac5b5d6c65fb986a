"""Enrolment events reach the worker's evaluation: days before enrolment do not count, and
reports converge to the newest whatever their arrival order."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.events import ENROLMENT_RECORDED, CloudEvent, EnrolmentData
from opspor_shared.kafka import Delivered
from opspor_worker.service import Context
from tests.support import school_days
from tests.worker.test_worker import FIRST, concerns, feed, reg


def enrolment(pupil: str, start: date, recorded: datetime, event_id: str) -> Delivered:
    data = EnrolmentData(
        event_id=event_id,
        pupil_id=pupil,
        school_id="vestbjerg",
        enrolled_from=start,
        recorded_at=recorded,
        # For the api's reports: the worker has no columns for them and must not need any.
        grade=3,
        class_name="3A",
    )
    event = CloudEvent(
        id=event_id,
        source="/tests",
        type=ENROLMENT_RECORDED,
        time=recorded,
        subject=pupil,
        data=data.model_dump(mode="json"),
    )
    return Delivered(event, None)


async def test_days_before_enrolment_do_not_count_and_the_newest_report_wins(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    days = school_days(FIRST, 5)
    late = enrolment("p1", days[1], datetime(2026, 9, 1, tzinfo=UTC), "e1")
    await feed(sessionmaker, ctx, [late, *(reg("p1", d) for d in days)])
    assert await concerns(sessionmaker) == {}  # four of the five days are the pupil's

    # The school system corrects the first day; an older report arriving later is ignored.
    corrected = enrolment("p1", days[0], datetime(2026, 9, 2, tzinfo=UTC), "e2")
    assert await feed(sessionmaker, ctx, [corrected]) == 1
    assert await feed(sessionmaker, ctx, [late]) == 0
    held = await concerns(sessionmaker)
    assert set(held) == {"consecutive-5"}
    assert (held["consecutive-5"].status, held["consecutive-5"].crossing_date) == (
        "active",
        days[4],
    )
