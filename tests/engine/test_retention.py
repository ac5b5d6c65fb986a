"""Retention rules (opspor_shared.retention) and why evaluating from the cutoff is safe.

The worker evaluates a pupil only from the cutoff C and keeps only crossings on or after the
settle date S = C + 366 days. These tests show that those crossings are exactly the ones a
full evaluation from the pupil's first registration gives, on the shipped packs, and that the
crossings before S are not (which is why they are final).
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from opspor_shared.calendar import Closure, SchoolCalendar, SchoolYear
from opspor_shared.engine import CATEGORIES, Registration, builtin_packs, evaluate
from opspor_shared.retention import retention_window
from opspor_shared.settings import ServiceSettings

# Three Danish school years with autumn, Christmas and winter breaks.
CALENDAR = SchoolCalendar(
    "DK",
    [
        SchoolYear(
            date(2024, 8, 12),
            date(2025, 6, 27),
            (
                Closure(date(2024, 10, 14), date(2024, 10, 18), "autumn"),
                Closure(date(2024, 12, 23), date(2025, 1, 3), "christmas"),
                Closure(date(2025, 2, 10), date(2025, 2, 14), "winter"),
            ),
        ),
        SchoolYear(
            date(2025, 8, 11),
            date(2026, 6, 26),
            (
                Closure(date(2025, 10, 13), date(2025, 10, 17), "autumn"),
                Closure(date(2025, 12, 22), date(2026, 1, 2), "christmas"),
                Closure(date(2026, 2, 9), date(2026, 2, 13), "winter"),
            ),
        ),
        SchoolYear(
            date(2026, 8, 10),
            date(2027, 6, 25),
            (
                Closure(date(2026, 10, 12), date(2026, 10, 16), "autumn"),
                Closure(date(2026, 12, 21), date(2027, 1, 1), "christmas"),
            ),
        ),
    ],
)
EXTENTS = (Decimal("1"), Decimal("1"), Decimal("0.5"), Decimal("0.25"))


def settings_with(**values: object) -> ServiceSettings:
    return ServiceSettings(
        database_url="postgresql://unused/x",
        kafka_bootstrap_servers="unused:9092",
        **values,  # type: ignore[arg-type]
    )


def test_cutoff_and_settle_date_follow_the_utc_day() -> None:
    s = settings_with(retention_registration_days=1095, retention_closed_concern_days=365)
    # 23:30 UTC on 31 Dec is already 1 Jan in Copenhagen; the rules count UTC days.
    w = retention_window(s, datetime(2027, 12, 31, 23, 30, tzinfo=UTC))
    assert w.cutoff == date(2027, 12, 31) - timedelta(days=1095) == date(2024, 12, 31)
    assert w.settle == date(2026, 1, 1)
    assert w.active_crossing_before == date(2025, 1, 1)
    assert w.closed_before == datetime(2026, 12, 31, 23, 30, tzinfo=UTC)


def test_which_concerns_may_be_purged() -> None:
    s = settings_with(retention_registration_days=400, retention_closed_concern_days=30)
    w = retention_window(s, datetime(2027, 6, 1, 12, tzinfo=UTC))
    assert (w.cutoff, w.settle, w.active_crossing_before) == (
        date(2026, 4, 27),
        date(2027, 4, 28),
        date(2027, 3, 29),
    )
    long_ago = datetime(2027, 4, 1, tzinfo=UTC)
    lately = datetime(2027, 5, 20, tzinfo=UTC)
    # Final and closed for 30 days: purged.
    assert w.concern_purgeable(date(2027, 3, 1), "active", None)
    assert w.concern_purgeable(date(2027, 2, 1), "withdrawn", long_ago)
    # Final, but closed for less than 30 days: kept.
    assert not w.concern_purgeable(date(2027, 4, 10), "active", None)
    assert not w.concern_purgeable(date(2027, 2, 1), "withdrawn", lately)
    # Withdrawn long ago but not final: a correction may still raise it again, so it keeps its
    # id and revisions.
    assert not w.concern_purgeable(date(2027, 4, 28), "withdrawn", long_ago)


def test_only_old_events_about_final_concerns_count_as_replays() -> None:
    s = settings_with(retention_registration_days=400, retention_closed_concern_days=30)
    w = retention_window(s, datetime(2027, 6, 1, 12, tzinfo=UTC))
    assert w.event_outlived(date(2027, 3, 1), datetime(2027, 3, 2, tzinfo=UTC))
    # Sent recently (an event in flight when its concern became final): still applied.
    assert not w.event_outlived(date(2027, 3, 1), datetime(2027, 5, 31, tzinfo=UTC))
    # Not final: always applied.
    assert not w.event_outlived(date(2027, 5, 1), datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    "values",
    [
        {"retention_registration_days": 399},
        {"retention_closed_concern_days": -1},
        {"purge_interval_seconds": 1},
        {"purge_chunk_rows": 0},
    ],
)
def test_unsafe_retention_settings_are_refused(values: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        settings_with(**values)


def test_evaluating_from_the_cutoff_alone_would_invent_crossings() -> None:
    # Absent every day from September 2024 on: a full evaluation crosses "5 consecutive" once.
    regs = [Registration(d, "day", "unauthorized", Decimal(1)) for d in CALENDAR.days]
    pack = builtin_packs()["dk-aalborg-2018"]
    horizon = date(2027, 6, 25)
    cutoff = date(2025, 3, 3)
    full = [c for c in evaluate(CALENDAR, regs, pack, horizon) if c.rule_id == "consecutive-5"]
    cut = [
        c
        for c in evaluate(CALENDAR, regs, pack, horizon, enrolled_from=cutoff)
        if c.rule_id == "consecutive-5"
    ]
    assert [c.date for c in full] == [date(2024, 8, 16)]
    # From the cutoff the run seems to start again: a crossing that never happened, and one
    # that the settle date rules out (it is before C + 366 days).
    assert [c.date for c in cut] == [date(2025, 3, 7)]
    assert cut[0].date < cutoff + timedelta(days=366)


@settings(max_examples=40, deadline=None)
@given(
    pack_id=st.sampled_from(sorted(builtin_packs())),
    cutoff_offset=st.integers(0, 330),
    seed=st.integers(0, 2**32 - 1),
    density=st.sampled_from((0.05, 0.2, 0.5, 0.9)),
)
def test_crossings_from_the_settle_date_on_equal_a_full_evaluation(
    pack_id: str, cutoff_offset: int, seed: int, density: float
) -> None:
    rng = random.Random(seed)
    regs = [
        Registration(d, "day", rng.choice(CATEGORIES), rng.choice(EXTENTS))
        for d in CALENDAR.days
        if rng.random() < density
    ]
    pack = builtin_packs()[pack_id]
    horizon = date(2027, 6, 25)
    cutoff = date(2024, 8, 1) + timedelta(days=cutoff_offset)
    settle = cutoff + timedelta(days=366)
    full = [c for c in evaluate(CALENDAR, regs, pack, horizon) if c.date >= settle]
    cut = evaluate(CALENDAR, regs, pack, horizon, enrolled_from=cutoff)
    assert [c for c in cut if c.date >= settle] == full
