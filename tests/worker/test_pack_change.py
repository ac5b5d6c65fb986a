"""Changing a school's packs, or adding a version to a stored pack, re-evaluates every pupil
of the affected schools and emits the resulting raised / withdrawn events, nothing more."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.models import Municipality, RulePackRow
from opspor_shared.engine import pack_digest, parse_pack
from opspor_shared.events import CONCERN_RAISED, CONCERN_WITHDRAWN, ConcernData
from opspor_worker.models import Concern
from opspor_worker.service import Context, tick
from tests.support import school_days
from tests.worker.test_worker import FIRST, feed, outbox, reg

RULE = {"id": "consecutive-n", "kind": "consecutive", "categories": ["unauthorized"]}


def local_pack(*versions: tuple[str, date, int]) -> dict[str, Any]:
    return {
        "id": "lokal",
        "name": "Lokal",
        "source": "test",
        "versions": [
            {
                "version": v,
                "effective_from": d.isoformat(),
                "rules": [RULE | {"n": n, "level": "concern"}],
            }
            for v, d, n in versions
        ],
    }


async def store_pack(
    sessionmaker: async_sessionmaker[AsyncSession], document: dict[str, Any]
) -> None:
    """What the api's PUT .../rule-packs/lokal writes."""
    digest = pack_digest(parse_pack(document))
    async with sessionmaker() as session, session.begin():
        stmt = insert(RulePackRow).values(
            municipality_id="aalborg", id="lokal", document=document, digest=digest
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[RulePackRow.municipality_id, RulePackRow.id],
                set_={"document": document, "digest": digest},
            )
        )


async def use_packs(sessionmaker: async_sessionmaker[AsyncSession], packs: list[str]) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Municipality).where(Municipality.id == "aalborg").values(rule_packs=packs)
        )


async def changes(
    sessionmaker: async_sessionmaker[AsyncSession], seen: int
) -> list[tuple[str, str, str]]:
    events = (await outbox(sessionmaker))[seen:]
    out = []
    for e in events:
        data = ConcernData.model_validate(e.data)
        kind = "raised" if e.type == CONCERN_RAISED else "withdrawn"
        assert e.type in (CONCERN_RAISED, CONCERN_WITHDRAWN)
        out.append(
            (
                kind,
                data.pupil_id,
                f"{data.explanation.pack_id}/{data.explanation.rule_id}@{data.explanation.rule_version}",
            )
        )
    return sorted(out)


async def test_pack_changes_emit_only_the_difference(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    days = school_days(FIRST, 5)
    await feed(sessionmaker, ctx, [reg("five", d) for d in days])
    await feed(sessionmaker, ctx, [reg("three", d) for d in days[:3]])
    assert await tick(sessionmaker, ctx) == 0  # records the schools' fingerprints
    seen = len(await outbox(sessionmaker))
    assert seen == 1  # Aalborg's consecutive-5 for "five"

    # Add a stored pack next to Aalborg's: both pupils cross 3 days in a row.
    await store_pack(sessionmaker, local_pack(("1", date(2026, 8, 1), 3)))
    await use_packs(sessionmaker, ["dk-aalborg-2018", "lokal"])
    assert await tick(sessionmaker, ctx) == 2
    assert await changes(sessionmaker, seen) == [
        ("raised", "five", "lokal/consecutive-n@1"),
        ("raised", "three", "lokal/consecutive-n@1"),
    ]
    seen += 2
    assert await tick(sessionmaker, ctx) == 0  # nothing changed since

    # Version 2 (4 days in a row) in force from the pupils' first absence day: the version
    # 1 concerns go, "five" crosses again under version 2, "three" no longer crosses.
    await store_pack(sessionmaker, local_pack(("1", date(2026, 8, 1), 3), ("2", days[0], 4)))
    assert await tick(sessionmaker, ctx) == 3
    assert await changes(sessionmaker, seen) == [
        ("raised", "five", "lokal/consecutive-n@2"),
        ("withdrawn", "five", "lokal/consecutive-n@1"),
        ("withdrawn", "three", "lokal/consecutive-n@1"),
    ]
    seen += 3

    # Back to Aalborg alone: the stored pack's concern is withdrawn, Aalborg's is untouched.
    await use_packs(sessionmaker, ["dk-aalborg-2018"])
    assert await tick(sessionmaker, ctx) == 1
    assert await changes(sessionmaker, seen) == [("withdrawn", "five", "lokal/consecutive-n@2")]
    async with sessionmaker() as session:
        aalborg = await session.scalar(select(Concern).where(Concern.pack_id == "dk-aalborg-2018"))
    assert aalborg is not None and (aalborg.status, aalborg.revision) == ("active", 1)
