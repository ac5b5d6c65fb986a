"""The one read-only repository for reference data owned by the api service.

The api writes municipalities, schools, school years and webhook endpoints (its tables); the
threshold-worker and the alerter read them only through this module, so the columns they depend
on are listed in one place. Nothing here writes.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Boolean, Date, Text, bindparam, column, func, select, table, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_shared.calendar import Closure, SchoolCalendar, SchoolYear
from opspor_shared.engine import RulePack, builtin_digest, builtin_packs, parse_pack

municipalities = table(
    "municipalities",
    column("id", Text),
    column("name", Text),
    column("country", Text),
    column("language", Text),
    column("rule_packs", ARRAY(Text)),
    column("ppr_mailbox", Text),
    column("unit_mailbox", Text),
    column("routing", JSONB),
)
schools = table(
    "schools",
    column("id", Text),
    column("municipality_id", Text),
    column("name", Text),
    column("timezone", Text),
    column("language", Text),
    column("rule_packs", ARRAY(Text)),
    column("mailbox", Text),
    column("routing", JSONB),
)
rule_packs = table(
    "rule_packs",
    column("id", Text),
    column("municipality_id", Text),
    column("document", JSONB),
    column("digest", Text),
)
school_years = table(
    "school_years",
    column("school_id", Text),
    column("first_day", Date),
    column("last_day", Date),
    column("closures", JSONB),
    column("extra_days", JSONB),
)

webhook_endpoints = table(
    "webhook_endpoints",
    column("municipality_id", Text),
    column("id", Text),
    column("url", Text),
    column("secret", Text),
    column("levels", JSONB),
    column("school_ids", JSONB),
    column("enabled", Boolean),
)


@dataclass(frozen=True)
class WebhookRef:
    """A municipality's webhook endpoint. The URL (it can carry a token) and the secret are
    left out of repr, so an endpoint that ends up in a log line or an error shows neither."""

    municipality_id: str
    id: str
    url: str = field(repr=False)
    # As stored: sealed when WEBHOOK_SECRET_KEYS is set (opspor_shared.secretbox opens it).
    stored_secret: str = field(repr=False)
    levels: tuple[str, ...]  # empty: every level
    school_ids: tuple[str, ...]  # empty: every school of the municipality
    enabled: bool

    def matches(self, level: str, school_id: str) -> bool:
        return (
            self.enabled
            and (not self.levels or level in self.levels)
            and (not self.school_ids or school_id in self.school_ids)
        )


@dataclass(frozen=True)
class SchoolRef:
    id: str
    municipality_id: str
    name: str
    country: str
    timezone: str
    language: str
    rule_packs: tuple[str, ...]  # the school's own, else its municipality's
    mailbox: str
    municipality_name: str
    ppr_mailbox: str | None
    unit_mailbox: str | None
    # Routing documents (opspor_shared.routing): the municipality's and the school's overrides.
    routing: Mapping[str, Any] | None = None
    school_routing: Mapping[str, Any] | None = None


# The schools with their municipality's settings, and those of the ids in the parameter `ids`.
# Built once, as the api reads its schools for every registration request.
_ALL_SCHOOLS = select(
    schools.c.id,
    schools.c.municipality_id,
    schools.c.name,
    municipalities.c.country,
    schools.c.timezone,
    func.coalesce(schools.c.language, municipalities.c.language).label("language"),
    # A school without its own packs uses its municipality's.
    func.coalesce(schools.c.rule_packs, municipalities.c.rule_packs).label("rule_packs"),
    schools.c.mailbox,
    municipalities.c.name.label("municipality_name"),
    municipalities.c.ppr_mailbox,
    municipalities.c.unit_mailbox,
    municipalities.c.routing,
    schools.c.routing.label("school_routing"),
).join(municipalities, municipalities.c.id == schools.c.municipality_id)
_SCHOOLS = _ALL_SCHOOLS.where(schools.c.id.in_(bindparam("ids", expanding=True)))

# The school years of the schools in the parameter `ids`, built once like _SCHOOLS.
_CALENDAR_ROWS = (
    select(school_years)
    .where(school_years.c.school_id.in_(bindparam("ids", expanding=True)))
    .order_by(school_years.c.school_id, school_years.c.first_day)
)


class ReferenceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def school(self, school_id: str) -> SchoolRef | None:
        return (await self.schools([school_id])).get(school_id)

    async def schools(self, school_ids: Sequence[str] | None = None) -> dict[str, SchoolRef]:
        """The given schools (all schools when None) that exist, in one query."""
        if school_ids is None:
            rows = await self._session.execute(_ALL_SCHOOLS)
        else:
            rows = await self._session.execute(_SCHOOLS, {"ids": list(school_ids)})
        return {
            row.id: SchoolRef(
                id=row.id,
                municipality_id=row.municipality_id,
                name=row.name,
                country=row.country,
                timezone=row.timezone,
                language=row.language,
                rule_packs=tuple(row.rule_packs),
                mailbox=row.mailbox,
                municipality_name=row.municipality_name,
                ppr_mailbox=row.ppr_mailbox,
                unit_mailbox=row.unit_mailbox,
                routing=row.routing,
                school_routing=row.school_routing,
            )
            for row in rows
        }

    async def packs(
        self, keys: Iterable[tuple[str, str]], cache: PackCache
    ) -> dict[tuple[str, str], PackRef]:
        """The packs that exist among (municipality id, pack id) keys: a shipped pack, or one
        that municipality stored through the API (pack ids are per municipality)."""
        wanted = set(keys)
        found = {
            key: PackRef(builtin_packs()[key[1]], None, builtin_digest(key[1]))
            for key in wanted
            if key[1] in builtin_packs()
        }
        stored = wanted - found.keys()
        if stored:
            r = rule_packs
            rows = await self._session.execute(
                select(r.c.municipality_id, r.c.id, r.c.digest).where(
                    tuple_(r.c.municipality_id, r.c.id).in_(sorted(stored))
                )
            )
            for row in rows:
                key = (row.municipality_id, row.id)
                pack = await cache.get(row.digest, self._document(key))
                found[key] = PackRef(pack, row.municipality_id, row.digest)
        return found

    def _document(self, key: tuple[str, str]) -> Callable[[], Awaitable[Mapping[str, Any]]]:
        async def read() -> Mapping[str, Any]:
            r = rule_packs
            doc = await self._session.scalar(
                select(r.c.document).where(r.c.municipality_id == key[0], r.c.id == key[1])
            )
            return doc if isinstance(doc, Mapping) else {}

        return read

    async def webhook_endpoints(self, municipality_id: str) -> list[WebhookRef]:
        """All of a municipality's endpoints, disabled ones included, ordered by id."""
        rows = await self._session.execute(
            select(webhook_endpoints)
            .where(webhook_endpoints.c.municipality_id == municipality_id)
            .order_by(webhook_endpoints.c.id)
        )
        return [_webhook_ref(row._mapping) for row in rows]

    async def webhook_endpoint(self, municipality_id: str, webhook_id: str) -> WebhookRef | None:
        w = webhook_endpoints
        row = (
            await self._session.execute(
                select(w).where(w.c.municipality_id == municipality_id, w.c.id == webhook_id)
            )
        ).first()
        return None if row is None else _webhook_ref(row._mapping)

    async def calendar_rows(self, school_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        rows = (await self._session.execute(_CALENDAR_ROWS, {"ids": list(school_ids)})).all()
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in school_ids}
        for r in rows:
            out[r.school_id].append(dict(r._mapping))
        return out

    async def calendars(
        self, countries: Mapping[str, str], cache: CalendarCache
    ) -> dict[str, SchoolCalendar]:
        """Calendars of the given schools (school id -> country), built once per content."""
        rows = await self.calendar_rows(list(countries))
        return {s: cache.get(countries[s], rows[s]) for s in countries}

    async def judged(
        self, refs: Mapping[str, SchoolRef], calendars: CalendarCache, packs: PackCache
    ) -> dict[str, tuple[SchoolCalendar, tuple[RulePack, ...]]]:
        """How each of the schools judges its pupils' days: its calendar and the packs in force
        there (those that exist), as ``opspor_shared.engine.timeline.enrolled_stays`` takes
        them."""
        built = await self.calendars({s: r.country for s, r in refs.items()}, calendars)
        found = await self.packs(
            {(r.municipality_id, p) for r in refs.values() for p in r.rule_packs}, packs
        )
        in_force = {
            s: [found[k].pack for p in r.rule_packs if (k := (r.municipality_id, p)) in found]
            for s, r in refs.items()
        }
        return {s: (built[s], tuple(in_force[s])) for s in refs}


@dataclass(frozen=True)
class PackRef:
    pack: RulePack
    owner: str | None  # the municipality that stored it; None for a shipped pack
    digest: str  # changes whenever the pack's content does


class PackCache:
    """Parsed stored packs keyed by content digest: a changed pack is never served stale, and
    an unchanged one is read and parsed once."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._cache: OrderedDict[str, RulePack] = OrderedDict()

    async def get(self, digest: str, read: Callable[[], Awaitable[Mapping[str, Any]]]) -> RulePack:
        if (pack := self._cache.get(digest)) is not None:
            self._cache.move_to_end(digest)
            return pack
        pack = parse_pack(await read())
        self._cache[digest] = pack
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return pack


def _webhook_ref(row: RowMapping) -> WebhookRef:
    return WebhookRef(
        municipality_id=row["municipality_id"],
        id=row["id"],
        url=row["url"],
        stored_secret=row["secret"],
        levels=tuple(row["levels"] or ()),
        school_ids=tuple(row["school_ids"] or ()),
        enabled=bool(row["enabled"]),
    )


class CalendarCache:
    """Built calendars keyed by their content, so an edited calendar is never served stale.

    Building one (public holidays, closures) costs milliseconds; reading its rows costs one
    indexed query, so callers read the rows every time and reuse the built object.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._cache: OrderedDict[str, SchoolCalendar] = OrderedDict()

    @staticmethod
    def fingerprint(country: str, rows: Sequence[Mapping[str, Any]]) -> str:
        canonical = json.dumps(
            [[r["first_day"], r["last_day"], r["closures"], r["extra_days"]] for r in rows],
            default=str,
            sort_keys=True,
        )
        return hashlib.sha256(f"{country}|{canonical}".encode()).hexdigest()

    def get(self, country: str, rows: Sequence[Mapping[str, Any]]) -> SchoolCalendar:
        key = self.fingerprint(country, rows)
        if (cal := self._cache.get(key)) is not None:
            self._cache.move_to_end(key)
            return cal
        cal = SchoolCalendar(country, [school_year_from_row(r) for r in rows])
        self._cache[key] = cal
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return cal


def school_year_from_row(row: Mapping[str, Any]) -> SchoolYear:
    return SchoolYear(
        first_day=row["first_day"],
        last_day=row["last_day"],
        closures=tuple(
            Closure(
                date.fromisoformat(c["first_day"]),
                date.fromisoformat(c["last_day"]),
                c.get("reason", ""),
            )
            for c in row["closures"] or ()
        ),
        extra_days=tuple(date.fromisoformat(d) for d in row["extra_days"] or ()),
    )
