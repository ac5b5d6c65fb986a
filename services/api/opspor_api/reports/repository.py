"""All SQL of the reports: set-based aggregates over the api's registrations, enrolments and
concern read model. School days come from the calendars (Python) and are passed in as arrays,
so a pupil-day is only counted on a day that is a school day of its school."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    column,
    func,
    literal,
    or_,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Subquery
from sqlalchemy.sql.selectable import LateralFromClause
from sqlalchemy.types import Date, SmallInteger, Text

from opspor_api.models import Case, CaseEntry, ConcernView, Enrolment, Registration


@dataclass(frozen=True)
class StayGroup:
    """Pupils of one school, grade and class whose stay covers the same days of a period."""

    school_id: str
    grade: int | None
    class_name: str | None
    first: date | None  # None: from the period's start
    last: date | None  # None: to the period's end
    pupils: int


@dataclass(frozen=True)
class Stay:
    pupil_id: str
    school_id: str
    grade: int | None
    class_name: str | None
    enrolled_from: date | None
    enrolled_until: date | None


class ReportRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _stays(self, school_ids: Sequence[str], first: date, last: date) -> Subquery:
        """The pupils of the schools: their enrolments there, and (as the engine does) pupils
        without any enrolment who have registrations at the school in [first, last], for the
        whole period."""
        e, r = Enrolment, Registration
        enrolled = select(
            e.pupil_id,
            e.school_id,
            e.grade,
            e.class_name,
            e.enrolled_from.label("lo"),
            e.enrolled_until.label("hi"),
        ).where(e.school_id.in_(school_ids))
        # Distinct pupils first: a school's few thousand pupils are then probed against the
        # enrolments' primary key, instead of hashing every enrolment of the municipality.
        registered = (
            select(r.pupil_id, r.school_id)
            .where(r.school_id.in_(school_ids), r.date.between(first, last))
            .distinct()
            .subquery("registered")
        )
        unenrolled = select(
            registered.c.pupil_id,
            registered.c.school_id,
            literal(None, SmallInteger).label("grade"),
            literal(None, Text).label("class_name"),
            literal(None, Date).label("lo"),
            literal(None, Date).label("hi"),
        ).where(~select(e.pupil_id).where(e.pupil_id == registered.c.pupil_id).exists())
        return union_all(enrolled, unenrolled).subquery("stays")

    async def stay_groups(
        self, school_ids: Sequence[str], first: date, last: date
    ) -> list[StayGroup]:
        """Pupil counts per school, grade, class and covered part of [first, last]."""
        s = self._stays(school_ids, first, last)
        lo = func.greatest(s.c.lo, first)
        hi = func.least(s.c.hi, last)
        query = (
            select(s.c.school_id, s.c.grade, s.c.class_name, lo, hi, func.count())
            .where(or_(s.c.lo.is_(None), s.c.lo <= last), or_(s.c.hi.is_(None), s.c.hi >= first))
            .group_by(s.c.school_id, s.c.grade, s.c.class_name, lo, hi)
        )
        return [StayGroup(*row) for row in (await self.session.execute(query)).all()]

    def _day_values(self, school_days: Mapping[str, Sequence[date]]) -> Subquery:
        schools = [s for s, days in school_days.items() for _ in days]
        days = [d for ds in school_days.values() for d in ds]
        return select(
            func.unnest(literal(schools, ARRAY(Text)), literal(days, ARRAY(Date)))
            .table_valued(column("school_id", Text), column("day", Date))
            .render_derived()
        ).subquery("school_days")

    def _c(self, school_days: Mapping[str, Sequence[date]], first: date, last: date) -> Subquery:
        """c(d) per pupil, school day and category: min(1, sum of extents)."""
        r = Registration
        sd = self._day_values(school_days)
        return (
            select(
                r.pupil_id,
                r.school_id,
                r.date,
                r.category,
                func.least(1, func.sum(r.extent)).label("c"),
            )
            .join(sd, and_(sd.c.school_id == r.school_id, sd.c.day == r.date))
            .where(
                r.school_id.in_(list(school_days)),
                r.date.between(first, last),
                r.retracted.is_(False),
                r.category.is_not(None),
            )
            .group_by(r.pupil_id, r.school_id, r.date, r.category)
            .subquery("c")
        )

    def _covered(self, s: Subquery, c: Subquery) -> ColumnElement[bool]:
        return and_(
            s.c.pupil_id == c.c.pupil_id,
            s.c.school_id == c.c.school_id,
            or_(s.c.lo.is_(None), c.c.date >= s.c.lo),
            or_(s.c.hi.is_(None), c.c.date <= s.c.hi),
        )

    async def _roomy(self) -> None:
        # The aggregates hash one row per pupil, day and category: a school year of a
        # municipality is about a million of them, which the default 4 MB work_mem spills to
        # disk. For this transaction only.
        await self.session.execute(text("set local work_mem = '64MB'"))

    async def absence_by_group(
        self, school_days: Mapping[str, Sequence[date]], first: date, last: date
    ) -> list[tuple[str, int | None, str | None, str, Decimal]]:
        """Sum of c(d) per school, grade, class and category over the pupils' school days."""
        await self._roomy()
        s = self._stays(list(school_days), first, last)
        c = self._c(school_days, first, last)
        query = (
            select(s.c.school_id, s.c.grade, s.c.class_name, c.c.category, func.sum(c.c.c))
            .select_from(c)
            .join(s, self._covered(s, c))
            .group_by(s.c.school_id, s.c.grade, s.c.class_name, c.c.category)
        )
        return [tuple(row) for row in (await self.session.execute(query)).all()]

    def _per_day(self, s: Subquery, first: date, last: date) -> LateralFromClause:
        """c(d) per day and category of a stay's pupil at its school, on each day of
        [first, last] within the stay, school day or not: a lateral subquery over the
        registrations' primary key, so the pupil-day rows are grouped a pupil at a time in
        memory, instead of hashing or sorting the municipality's year of them in one piece."""
        y = Registration
        return (
            select(
                y.date.label("date"),
                y.category.label("category"),
                func.least(1, func.sum(y.extent)).label("c"),
            )
            .where(
                y.pupil_id == s.c.pupil_id,
                y.school_id == s.c.school_id,
                y.date.between(
                    func.greatest(func.coalesce(s.c.lo, first), first),
                    func.least(func.coalesce(s.c.hi, last), last),
                ),
                y.retracted.is_(False),
                y.category.is_not(None),
            )
            .group_by(y.date, y.category)
            .lateral("per_day")
        )

    async def absence_by_stay(
        self, school_ids: Sequence[str], first: date, last: date
    ) -> list[tuple[str, int | None, str | None, str, Decimal]]:
        """Sum of c(d) per school, grade, class and category over each pupil's days in
        [first, last] within their stay, school day or not (see `absence_by_group` for the
        days that are not)."""
        await self._roomy()
        s = self._stays(school_ids, first, last)
        per_day = self._per_day(s, first, last)
        query = (
            select(
                s.c.school_id, s.c.grade, s.c.class_name, per_day.c.category, func.sum(per_day.c.c)
            )
            .select_from(s)
            .join(per_day, true())
            .group_by(s.c.school_id, s.c.grade, s.c.class_name, per_day.c.category)
        )
        return [tuple(row) for row in (await self.session.execute(query)).all()]

    async def absence_by_date(
        self, school_ids: Sequence[str], first: date, last: date
    ) -> list[tuple[str, date, str, Decimal]]:
        """Sum of c(d) per school, day and category over the schools' pupils, on each day of
        [first, last] within their stays, school day or not: the caller keeps the school
        days. (Joining the registrations to the school days instead takes twice as long for a
        municipality's year.)"""
        await self._roomy()
        s = self._stays(school_ids, first, last)
        per_day = self._per_day(s, first, last)
        query = (
            select(s.c.school_id, per_day.c.date, per_day.c.category, func.sum(per_day.c.c))
            .select_from(s)
            .join(per_day, true())
            .group_by(s.c.school_id, per_day.c.date, per_day.c.category)
        )
        return [tuple(row) for row in (await self.session.execute(query)).all()]

    async def stays_on(self, school_ids: Sequence[str], day: date, since: date) -> list[Stay]:
        """The schools' pupils on `day`: enrolled then, or without enrolment and registered
        at the school in [since, day]."""
        s = self._stays(school_ids, since, day)
        query = (
            select(s)
            .where(or_(s.c.lo.is_(None), s.c.lo <= day), or_(s.c.hi.is_(None), s.c.hi >= day))
            .order_by(s.c.school_id, s.c.pupil_id)
        )
        return [Stay(*row) for row in (await self.session.execute(query)).all()]

    async def fully_absent(
        self, school_days: Mapping[str, Sequence[date]], threshold: Decimal
    ) -> list[tuple[str, str]]:
        """(school, pupil) absent in any category (c(d) over all categories >= threshold) on
        every one of the given school days of their school."""
        r = Registration
        sd = self._day_values(school_days)
        per_day = (
            select(r.pupil_id, r.school_id, r.date)
            .join(sd, and_(sd.c.school_id == r.school_id, sd.c.day == r.date))
            .where(
                r.school_id.in_(list(school_days)),
                r.date.between(
                    min(d for ds in school_days.values() for d in ds),
                    max(d for ds in school_days.values() for d in ds),
                ),
                r.retracted.is_(False),
                r.category.is_not(None),
            )
            .group_by(r.pupil_id, r.school_id, r.date)
            .having(func.sum(r.extent) >= threshold)
            .subquery("absent_days")
        )
        needed = sd.c.day  # only for the count per school below
        counts = (
            select(sd.c.school_id, func.count(needed).label("days"))
            .group_by(sd.c.school_id)
            .subquery("needed")
        )
        query = (
            select(per_day.c.school_id, per_day.c.pupil_id)
            .join(counts, counts.c.school_id == per_day.c.school_id)
            .group_by(per_day.c.school_id, per_day.c.pupil_id, counts.c.days)
            .having(func.count() == counts.c.days)
        )
        return [(row[0], row[1]) for row in (await self.session.execute(query)).all()]

    async def open_concerns(
        self, school_ids: Sequence[str], visible: ColumnElement[bool]
    ) -> list[Any]:
        """Active concerns per school, level and pupil: how many and the latest crossing."""
        c, e = ConcernView, Enrolment
        query = (
            select(
                c.school_id,
                c.level,
                c.pupil_id,
                e.grade,
                e.class_name,
                func.count(),
                func.max(c.crossing_date),
            )
            .outerjoin(e, and_(e.pupil_id == c.pupil_id, e.school_id == c.school_id))
            .where(c.school_id.in_(school_ids), c.status == "active", visible)
            .group_by(c.school_id, c.level, c.pupil_id, e.grade, e.class_name)
            .order_by(c.school_id, c.level, c.pupil_id)
        )
        return list((await self.session.execute(query)).all())

    async def registrations_of(self, pupil_ids: Sequence[str]) -> list[Any]:
        """Current registrations of the pupils (at any school: windows reach across moves).

        Rows, not objects: the engine reads date, slot, category and extent off them as they
        are; on the connection, the ORM's row processing would cost more than the query."""
        r = Registration
        query = (
            select(r.pupil_id, r.date, r.slot, r.category, r.extent)
            .where(r.pupil_id.in_(pupil_ids), r.retracted.is_(False), r.category.is_not(None))
            .order_by(r.pupil_id, r.date, r.slot)
        )
        return list((await (await self.session.connection()).execute(query)).all())

    async def enrolments_of(self, pupil_ids: Sequence[str]) -> list[Any]:
        e = Enrolment
        query = select(e.pupil_id, e.school_id, e.enrolled_from, e.enrolled_until).where(
            e.pupil_id.in_(pupil_ids)
        )
        return list((await (await self.session.connection()).execute(query)).all())

    async def ppr_referrals(
        self, school_ids: Sequence[str], since: date, day: date
    ) -> list[tuple[str, str, str, date]]:
        """(school, pupil, consulted|referred, date) of each referral to PPR/PPT recorded on a
        case of the schools, dated in [since, day]."""
        on = CaseEntry.data["on"].astext.cast(Date)
        query = (
            select(Case.school_id, Case.pupil_id, CaseEntry.data["type"].astext, on)
            .join(Case, Case.id == CaseEntry.case_id)
            .where(
                Case.school_id.in_(school_ids),
                CaseEntry.kind == "referral",
                CaseEntry.data["to"].astext == "ppr",
                on.between(since, day),
            )
        )
        return [tuple(row) for row in (await self.session.execute(query)).all()]

    async def open_cases(
        self, school_ids: Sequence[str]
    ) -> list[tuple[str, str, str | None, list[str]]]:
        """(school, phase, coordinator, overdue reasons) of each open case of the schools."""
        query = select(Case.school_id, Case.phase, Case.coordinator, Case.overdue_reasons).where(
            Case.school_id.in_(school_ids), Case.status == "open"
        )
        return [tuple(row) for row in (await self.session.execute(query)).all()]  # type: ignore[misc]
