from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Boolean, ColumnClause, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import Municipality, RulePackRow, School, SchoolYearRow

# PostgreSQL sets xmax = 0 on a freshly inserted row version: tells insert from update.
INSERTED: ColumnClause[bool] = literal_column("(xmax = 0)", Boolean)


class ConfigRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def municipality(self, municipality_id: str) -> Municipality | None:
        return await self.session.get(Municipality, municipality_id)

    async def upsert_municipality(self, values: dict[str, object]) -> bool:
        """Returns True when the row was created."""
        stmt = insert(Municipality).values(values)
        upsert = stmt.on_conflict_do_update(
            index_elements=[Municipality.id],
            set_={**{k: stmt.excluded[k] for k in values if k != "id"}, "updated_at": func.now()},
        ).returning(INSERTED)
        return bool((await self.session.execute(upsert)).scalar_one())

    async def stored_pack_ids(self, municipality_id: str) -> list[str]:
        return list(
            await self.session.scalars(
                select(RulePackRow.id).where(RulePackRow.municipality_id == municipality_id)
            )
        )

    async def school(self, school_id: str) -> School | None:
        return await self.session.get(School, school_id)

    async def upsert_school(self, values: dict[str, object]) -> bool:
        stmt = insert(School).values(values)
        upsert = stmt.on_conflict_do_update(
            index_elements=[School.id],
            set_={**{k: stmt.excluded[k] for k in values if k != "id"}, "updated_at": func.now()},
        ).returning(INSERTED)
        return bool((await self.session.execute(upsert)).scalar_one())

    async def school_years(self, school_ids: Sequence[str]) -> list[SchoolYearRow]:
        rows = await self.session.scalars(
            select(SchoolYearRow)
            .where(SchoolYearRow.school_id.in_(school_ids))
            .order_by(SchoolYearRow.school_id, SchoolYearRow.first_day)
        )
        return list(rows)

    async def upsert_school_year(self, values: dict[str, object]) -> bool:
        stmt = insert(SchoolYearRow).values(values)
        upsert = stmt.on_conflict_do_update(
            index_elements=[SchoolYearRow.school_id, SchoolYearRow.label],
            set_={k: stmt.excluded[k] for k in ("first_day", "last_day", "closures", "extra_days")},
        ).returning(INSERTED)
        return bool((await self.session.execute(upsert)).scalar_one())
