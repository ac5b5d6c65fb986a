"""All SQL of cases."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import (
    Case,
    CaseEntry,
    CaseModelRow,
    CaseText,
    ConcernView,
    Municipality,
    School,
    api_outbox,
)
from opspor_shared.outbox import OutboxMessage, enqueue


class CaseRepository:
    def __init__(self, session: AsyncSession, topic: str = "absence.cases.v1") -> None:
        self.session = session
        # Where case events go (ApiSettings.cases_topic).
        self.topic = topic

    async def get(self, case_id: uuid.UUID, *, lock: bool = False) -> Case | None:
        query = select(Case).where(Case.id == case_id)
        if lock:
            query = query.with_for_update()
        return await self.session.scalar(query)

    async def open_case(self, pupil_id: str, school_id: str) -> Case | None:
        return await self.session.scalar(
            select(Case)
            .where(Case.pupil_id == pupil_id, Case.school_id == school_id, Case.status == "open")
            .with_for_update()
        )

    async def insert_case(self, values: dict[str, Any]) -> bool:
        """False when another open case of the pupil at the school won the race."""
        stmt = (
            insert(Case)
            .values(**values)
            # A literal predicate: with a bound parameter PostgreSQL cannot match the partial
            # index once the statement runs on a generic plan.
            .on_conflict_do_nothing(
                index_elements=["pupil_id", "school_id"], index_where=text("status = 'open'")
            )
            .returning(Case.id)
        )
        return (await self.session.scalar(stmt)) is not None

    async def add_entry(
        self,
        case_id: uuid.UUID,
        kind: str,
        data: dict[str, Any],
        by: str,
        text: str | None = None,
        concern_id: uuid.UUID | None = None,
    ) -> int | None:
        """The new entry's id; None when the concern is already attached to this case."""
        stmt = insert(CaseEntry).values(
            case_id=case_id, kind=kind, data=data, by=by, concern_id=concern_id
        )
        if concern_id is not None:
            stmt = stmt.on_conflict_do_nothing(
                index_elements=["case_id", "concern_id"],
                index_where=CaseEntry.concern_id.is_not(None),
            )
        entry_id = await self.session.scalar(stmt.returning(CaseEntry.id))
        if entry_id is not None and text:
            await self.session.execute(insert(CaseText).values(entry_id=entry_id, text=text))
        return entry_id

    async def entries(self, case_id: uuid.UUID) -> list[CaseEntry]:
        rows = await self.session.scalars(
            select(CaseEntry).where(CaseEntry.case_id == case_id).order_by(CaseEntry.id)
        )
        return list(rows)

    async def texts(self, entry_ids: Sequence[int]) -> dict[int, str]:
        if not entry_ids:
            return {}
        rows = await self.session.execute(
            select(CaseText.entry_id, CaseText.text).where(CaseText.entry_id.in_(entry_ids))
        )
        return {r.entry_id: r.text for r in rows}

    async def texted(self, case_id: uuid.UUID) -> frozenset[int]:
        """The case's entries that carry free text (blank text is none): a requirement such as
        a contact's outcome asks whether it was written, never what it says."""
        rows = await self.session.scalars(
            select(CaseText.entry_id)
            .join(CaseEntry, CaseEntry.id == CaseText.entry_id)
            .where(CaseEntry.case_id == case_id, func.btrim(CaseText.text, " \t\r\n") != "")
        )
        return frozenset(rows)

    async def concern_attached(self, concern_id: uuid.UUID) -> bool:
        found = await self.session.scalar(
            select(CaseEntry.id).where(CaseEntry.concern_id == concern_id).limit(1)
        )
        return found is not None

    async def set_concern_state(
        self, concern_id: uuid.UUID, withdrawn: bool, revision: int
    ) -> None:
        await self.session.execute(
            update(CaseEntry)
            .where(
                CaseEntry.concern_id == concern_id,
                CaseEntry.data["revision"].as_integer() < revision,
            )
            .values(
                data=CaseEntry.data.op("||")(
                    func.jsonb_build_object("withdrawn", withdrawn, "revision", revision)
                )
            )
        )

    async def page(
        self,
        where: ColumnElement[bool],
        after: tuple[date, uuid.UUID] | None,
        limit: int,
    ) -> list[Case]:
        query = select(Case).where(where)
        if after is not None:
            query = query.where(
                or_(
                    Case.opened_on < after[0],
                    and_(Case.opened_on == after[0], Case.id < after[1]),
                )
            )
        query = query.order_by(Case.opened_on.desc(), Case.id.desc()).limit(limit)
        return list(await self.session.scalars(query))

    async def every_case(
        self,
        after: uuid.UUID | None,
        limit: int,
        *,
        since: datetime | None = None,
        schools: Sequence[str] = (),
    ) -> list[Case]:
        """A page of all cases by id (changed since `since`, of `schools`), for a replay."""
        query = select(Case).order_by(Case.id).limit(limit)
        if after is not None:
            query = query.where(Case.id > after)
        if since is not None:
            query = query.where(Case.updated_at >= since)
        if schools:
            query = query.where(Case.school_id.in_(list(schools)))
        return list(await self.session.scalars(query))

    async def open_cases(self) -> list[Case]:
        return list(
            await self.session.scalars(
                select(Case).where(Case.status == "open").order_by(Case.id).with_for_update()
            )
        )

    async def ppr_must_pupils(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """(pupil, school) pairs with an active ppr-must concern."""
        if not pairs:
            return set()
        rows = await self.session.execute(
            select(ConcernView.pupil_id, ConcernView.school_id)
            .where(
                ConcernView.level == "ppr-must",
                ConcernView.status == "active",
                ConcernView.pupil_id.in_(sorted({p for p, _ in pairs})),
            )
            .distinct()
        )
        return {(r.pupil_id, r.school_id) for r in rows}

    async def school(self, school_id: str) -> tuple[School, Municipality] | None:
        row = (
            await self.session.execute(
                select(School, Municipality)
                .join(Municipality, Municipality.id == School.municipality_id)
                .where(School.id == school_id)
            )
        ).one_or_none()
        return None if row is None else (row[0], row[1])

    async def schools(self, school_ids: Sequence[str]) -> dict[str, tuple[School, Municipality]]:
        rows = await self.session.execute(
            select(School, Municipality)
            .join(Municipality, Municipality.id == School.municipality_id)
            .where(School.id.in_(sorted(set(school_ids))))
        )
        return {r[0].id: (r[0], r[1]) for r in rows}

    async def stored_models(self, municipality_id: str) -> list[CaseModelRow]:
        return list(
            await self.session.scalars(
                select(CaseModelRow).where(CaseModelRow.municipality_id == municipality_id)
            )
        )

    async def insert_model(self, municipality_id: str, model_id: str, document: Any) -> bool:
        """False when the municipality already stored a model with this id."""
        stmt = (
            insert(CaseModelRow)
            .values(municipality_id=municipality_id, id=model_id, document=document)
            .on_conflict_do_nothing()
            .returning(CaseModelRow.id)
        )
        return (await self.session.scalar(stmt)) is not None

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        await enqueue(self.session, api_outbox, messages)
