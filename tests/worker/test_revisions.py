"""Explanations follow the facts (issue 13 item 4, DOMAIN.md section 5): a correction that keeps
an active concern but changes its window, contributing dates or value publishes a new revision
as concern.updated; a correction that changes nothing publishes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.devstack.certs import ensure_certs
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.events import (
    CONCERN_RAISED,
    CONCERN_UPDATED,
    CONCERN_WITHDRAWN,
    CloudEvent,
    ConcernData,
)
from opspor_worker.service import Context
from tests.alerter.conftest import deliver_until, make_settings, record, settled
from tests.support import school_days
from tests.worker.test_pack_change import use_packs
from tests.worker.test_worker import concerns, feed, outbox, reg

QUARTER_START = date(2026, 8, 10)  # the school year's first day, in the third quarter
AUG_14 = date(2026, 8, 14)


def by_rule(events: Sequence[CloudEvent]) -> dict[str, list[tuple[str, int, ConcernData]]]:
    out: dict[str, list[tuple[str, int, ConcernData]]] = {}
    for e in events:
        data = ConcernData.model_validate(e.data)
        out.setdefault(data.explanation.rule_id, []).append((e.type, data.revision, data))
    return out


async def test_14_aug_authorized_keeps_the_quarter_concerns_and_revises_their_explanation(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await use_packs(sessionmaker, ["dk-aalborg-2018", "dk-national"])
    days = school_days(QUARTER_START, 5)  # Mon 10 - Fri 14 Aug, unauthorized
    assert days[-1] == AUG_14
    await feed(sessionmaker, ctx, [reg("p1", d, event_id=f"r-{d}") for d in days])
    first = by_rule(await outbox(sessionmaker))
    quarter_rules = sorted(r for r in first if r != "consecutive-5")
    assert "consecutive-5" in first and len(quarter_rules) == 2  # the 10% and 15% rules
    for rule in quarter_rules:
        [(kind, revision, data)] = first[rule]
        assert (kind, revision) == (CONCERN_RAISED, 1)
        assert float(data.explanation.value) == 0.25
        assert AUG_14 in {c.date for c in data.explanation.contributing}

    correction = reg(
        "p1",
        AUG_14,
        category="authorized",
        event_id="r-14-corrected",
        recorded_at=reg("p1", AUG_14).event.time + timedelta(days=3),
    )
    await feed(sessionmaker, ctx, [correction])

    after = by_rule((await outbox(sessionmaker))[sum(len(v) for v in first.values()) :])
    assert [(k, r) for k, r, _ in after["consecutive-5"]] == [(CONCERN_WITHDRAWN, 2)]
    held = await concerns(sessionmaker)
    for rule in quarter_rules:
        [(kind, revision, data)] = after[rule]
        assert (kind, revision, data.status) == (CONCERN_UPDATED, 2, "active")
        assert data.concern_id == first[rule][0][2].concern_id  # the same concern
        assert float(data.explanation.value) == 0.2
        assert AUG_14 not in {c.date for c in data.explanation.contributing}
        assert len(data.explanation.contributing) == 4
        assert "20" in data.explanation.summary
        # The worker's own record holds the revised explanation too.
        assert (held[rule].revision, held[rule].status) == (2, "active")
        assert held[rule].explanation == data.explanation.model_dump(mode="json")

    # The same correction again, and a correction that changes nothing: no event at all.
    count = len(await outbox(sessionmaker))
    await feed(sessionmaker, ctx, [correction])
    await feed(sessionmaker, ctx, [reg("p1", date(2026, 11, 2), category="illness")])
    assert len(await outbox(sessionmaker)) == count


async def test_the_correction_through_the_alerter_mails_only_the_withdrawal(
    ctx: Context,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    var_dir: Path,
    tmp_path: Path,
) -> None:
    """The worker's own events fed to the alerter (real mailbox): the first evaluation makes one
    grouped mail to the school and one to the municipal unit; the 14 Aug correction mails only
    the withdrawal of consecutive-5, never the revised quarter concerns."""
    await use_packs(sessionmaker, ["dk-aalborg-2018", "dk-national"])
    certs = ensure_certs(var_dir / "certs")
    with Mailbox(tmp_path / "mail", certs) as box:
        settings = make_settings(database_url, box.port, certs.ca_file)
        days = school_days(QUARTER_START, 5)
        await feed(sessionmaker, ctx, [reg("p1", d, event_id=f"r-{d}") for d in days])
        first = await outbox(sessionmaker)
        await record(sessionmaker, settings, *first)
        await deliver_until(sessionmaker, settings, settled)
        assert sorted(m.envelope_to[0] for m in box.messages()) == [
            "boern@sikkerpost.aalborg.dk",  # notify-municipality: the 15% rule
            "vestbjerg@sikkerpost.aalborg.dk",  # consecutive-5 and the 10% rule, one mail
        ]
        school_mail = next(m for m in box.messages() if m.envelope_to[0].startswith("vest"))
        assert "2 regler" in school_mail.message["Subject"]

        correction = reg(
            "p1",
            AUG_14,
            category="authorized",
            event_id="r-14-corrected",
            recorded_at=reg("p1", AUG_14).event.time + timedelta(days=3),
        )
        await feed(sessionmaker, ctx, [correction])
        later = (await outbox(sessionmaker))[len(first) :]
        assert sorted(e.type for e in later) == [
            CONCERN_UPDATED,
            CONCERN_UPDATED,
            CONCERN_WITHDRAWN,
        ]
        await record(sessionmaker, settings, *later)
        await deliver_until(sessionmaker, settings, settled)

        assert len(box.messages()) == 3
        withdrawal = box.messages()[2]
        assert withdrawal.message["Subject"].startswith("Tilbagekaldt")
        subject = str(withdrawal.message["Subject"])
        assert subject.endswith("(dk-aalborg-2018)") and "regler" not in subject
        body = withdrawal.message.get_content()
        assert "consecutive-5" in body and "share-10-quarter" not in body
        assert withdrawal.message["In-Reply-To"] == school_mail.message["Message-ID"]
