"""Dead letters an operator can act on (issue 9): list the messages of `<topic>.dlq` with why
and from where, and re-drive one or all of them to their topic after a fix, each once."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from opspor_api.deadletters.repository import DeadLetterTopic, RedriveRepository, resend
from opspor_api.deadletters.schemas import (
    DeadLetter,
    DeadLetterPage,
    RedriveIn,
    RedriveOut,
    TopicSummary,
)
from opspor_api.errors import NotFound, ProblemError
from opspor_api.settings import ApiSettings
from opspor_shared.auth import Principal
from opspor_shared.kafka import dlq_topic

BACKLOG = Gauge(
    "opspor_dead_letter_backlog",
    "Messages in <topic>.dlq not yet re-driven (updated when an operator lists or re-drives)",
    ["topic"],
)
# A re-drive of `all` reads at most this many dead letters; more means something is broken
# at the source, and the operator re-drives in rounds.
MAX_REDRIVE = 10_000


class BrokerUnavailable(ProblemError):
    status = 503
    type = "urn:opspor:problem:broker-unavailable"
    title = "The message broker is not reachable"


def topics(settings: ApiSettings) -> list[str]:
    """The topics whose consumers dead-letter (the api's, the worker's and the alerter's)."""
    return [settings.registrations_topic, settings.concerns_topic, settings.cases_topic]


def _known(settings: ApiSettings, topic: str) -> str:
    if topic not in topics(settings):
        raise NotFound(f"no topic {topic!r}; known: {', '.join(topics(settings))}")
    return topic


def _header(record: Any, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace") or None
    return None


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _key(raw: bytes | None) -> str | None:
    if not raw:
        return None
    text = raw.decode(errors="replace")
    return text if len(text) <= 64 and text.isprintable() else None


def _event_id(raw: bytes | None) -> str | None:
    try:
        found = json.loads(raw or b"").get("id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) and len(found) <= 200 else None


def _letter(record: Any, redrive: Any) -> DeadLetter:
    at = _header(record, "opspor-dlq-at")
    return DeadLetter(
        offset=record.offset,
        reason=_header(record, "opspor-dlq-reason") or "unknown",
        source_partition=_int(_header(record, "opspor-dlq-partition")),
        source_offset=_int(_header(record, "opspor-dlq-offset")),
        group=_header(record, "opspor-dlq-group"),
        at=datetime.fromisoformat(at) if at else None,
        bytes=len(record.value or b""),
        key=_key(record.key),
        event_id=_event_id(record.value),
        redriven_at=redrive.at if redrive else None,
        redriven_by=redrive.by if redrive else None,
    )


async def summaries(settings: ApiSettings, repo: RedriveRepository) -> list[TopicSummary]:
    out = []
    try:
        for topic in topics(settings):
            start, end = await DeadLetterTopic(settings, dlq_topic(topic)).counts()
            redriven = len([o for o in await repo.of(dlq_topic(topic)) if start <= o < end])
            out.append(
                TopicSummary(
                    topic=topic,
                    dead_letter_topic=dlq_topic(topic),
                    messages=end - start,
                    backlog=end - start - redriven,
                )
            )
            BACKLOG.labels(dlq_topic(topic)).set(end - start - redriven)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"could not read the dead-letter topics: {type(exc).__name__}"
        ) from exc
    return out


async def page(
    settings: ApiSettings, repo: RedriveRepository, topic: str, after: int | None, limit: int
) -> DeadLetterPage:
    dlq = dlq_topic(_known(settings, topic))
    try:
        records, _, end = await DeadLetterTopic(settings, dlq).read(after, limit)
    except KafkaError as exc:
        raise BrokerUnavailable(f"could not read {dlq}: {type(exc).__name__}") from exc
    done = await repo.of(dlq, [r.offset for r in records])
    items = [_letter(r, done.get(r.offset)) for r in records]
    more = bool(records) and records[-1].offset < end - 1
    return DeadLetterPage(items=items, next_after=records[-1].offset if more else None)


async def redrive(
    settings: ApiSettings,
    repo: RedriveRepository,
    principal: Principal,
    topic: str,
    body: RedriveIn,
) -> RedriveOut:
    """Claims the re-drives in the request's transaction, then sends: a crash or a broker
    error rolls the claims back and the operator asks again (a message sent twice is a
    duplicate the consumers ignore; one never sent is not lost)."""
    dlq = dlq_topic(_known(settings, topic))
    try:
        records, _, _ = await DeadLetterTopic(settings, dlq).read(None, MAX_REDRIVE)
        wanted = {r.offset for r in records} if body.all else set(body.offsets or ())
        present = {r.offset: r for r in records if r.offset in wanted}
        claimed = await repo.claim(dlq, sorted(present), principal.subject)
        await resend(settings, [(topic, present[o]) for o in claimed], principal.subject)
    except KafkaError as exc:
        raise BrokerUnavailable(f"nothing was re-driven: {type(exc).__name__}") from exc
    redriven = await repo.of(dlq)
    BACKLOG.labels(dlq).set(
        len(records) - len([o for o in redriven if o in {r.offset for r in records}])
    )
    return RedriveOut(
        redriven=claimed,
        already=sorted(set(present) - set(claimed)),
        missing=sorted(wanted - set(present)),
    )
