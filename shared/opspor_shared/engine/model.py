"""Value types of the rule engine: registrations, rules, rule packs and crossings.

All amounts are exact. Extents, day thresholds, shares and totals have at most four decimal
places, so the engine compares them as integers in units of 1/10000 of a school day
(``UNITS_PER_DAY``); floats never take part in a comparison.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, NamedTuple, Protocol, get_args

Category = Literal["illness", "authorized", "unauthorized"]
CATEGORIES: Final[tuple[Category, ...]] = get_args(Category)
RuleKind = Literal["consecutive", "count", "total", "share"]
RULE_KINDS: Final[tuple[RuleKind, ...]] = get_args(RuleKind)
PeriodKind = Literal["rolling", "month", "quarter", "half_year", "school_year"]
PERIOD_KINDS: Final[tuple[PeriodKind, ...]] = get_args(PeriodKind)

UNITS_PER_DAY: Final = 10_000
DEFAULT_DAY_THRESHOLD: Final = Decimal("0.5")

# Ids, levels and version labels end up in concern ids ("a|b|c"), topic payloads and URLs,
# so they are restricted to a plain slug alphabet.
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")

# The most school days a fixed period can hold: every day of it, should a school add all
# weekends as extra days. A school year has no such bound (its range is configuration).
_FIXED_PERIOD_MAX_DAYS: Final[dict[str, int]] = {"month": 31, "quarter": 92, "half_year": 184}
_FIXED_PERIOD_TEXT: Final[dict[str, str]] = {
    "month": "this month",
    "quarter": "this quarter",
    "half_year": "this half-year",
    "school_year": "this school year",
}

# Parameters each kind takes; the others must stay unset (min_days unset means 0).
KIND_PARAMETERS: Final[dict[str, tuple[str, ...]]] = {
    "consecutive": ("n",),
    "count": ("k", "over"),
    "total": ("x", "over"),
    "share": ("p", "over", "min_days"),
}
REQUIRED_PARAMETERS: Final[dict[str, tuple[str, ...]]] = {
    "consecutive": ("n",),
    "count": ("k", "over"),
    "total": ("x", "over"),
    "share": ("p", "over"),
}


def is_slug(value: object) -> bool:
    return isinstance(value, str) and _SLUG.match(value) is not None


def to_units(value: Decimal) -> int | None:
    """``value`` in 1/10000 days, or None when it has more than four decimal places."""
    if not value.is_finite():
        return None
    scaled = value.scaleb(4)
    if scaled != scaled.to_integral_value():
        return None
    return int(scaled)


def fraction_problem(value: Decimal) -> str | None:
    """Why ``value`` is not a fraction in (0, 1] with at most four decimal places, if it is not."""
    units = to_units(value)
    if units is None:
        return "must be a decimal number with at most 4 decimal places"
    if not 0 < units <= UNITS_PER_DAY:
        return "must be greater than 0 and at most 1"
    return None


def format_decimal(value: Decimal, min_places: int = 0) -> str:
    text = f"{value.normalize():f}"
    if min_places and "." not in text:
        text += "." + "0" * min_places
    return text


def format_percent(share: Decimal) -> str:
    return format_decimal(share * 100)


class RegistrationLike(Protocol):
    """What the engine reads of a registration: a ``Registration``, or any row with these
    fields (the api's dry run and reports hand over their rows as they are; the worker hands
    over ``RegistrationColumns``). The engine checks category and extent itself."""

    @property
    def date(self) -> dt.date: ...
    @property
    def slot(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def extent(self) -> Decimal: ...


class RegistrationColumns(NamedTuple):
    """A pupil's registrations as four parallel columns (position i of each is one
    registration), the form the engine reads them in. The worker gets them so from PostgreSQL,
    an array per column and pupil: building an object per registration cost the day-change
    tick more than evaluating it. ``columns_of`` makes them from registration objects."""

    dates: Sequence[dt.date]
    slots: Sequence[str]
    categories: Sequence[str]
    extents: Sequence[Decimal]


NO_REGISTRATIONS: Final = RegistrationColumns((), (), (), ())


def columns_of(
    registrations: Iterable[RegistrationLike] | RegistrationColumns,
) -> RegistrationColumns:
    """``registrations`` as columns (returned as they are when they already are)."""
    if isinstance(registrations, RegistrationColumns):
        return registrations
    regs = list(registrations)
    return RegistrationColumns(
        [r.date for r in regs],
        [r.slot for r in regs],
        [r.category for r in regs],
        [r.extent for r in regs],
    )


@dataclass(frozen=True)
class Registration:
    """One current registration; corrections and retractions are resolved by the caller."""

    date: dt.date
    slot: str
    category: Category
    extent: Decimal


@dataclass(frozen=True)
class Period:
    kind: PeriodKind
    length: int | None = None  # rolling only: the number of school days

    def __post_init__(self) -> None:
        if self.kind not in PERIOD_KINDS:
            raise ValueError(f"unknown period {self.kind!r}")
        if self.kind == "rolling":
            if isinstance(self.length, bool) or not isinstance(self.length, int):
                raise ValueError("a rolling period needs a length in school days")
            if self.length < 1:
                raise ValueError("a rolling period needs a length of at least 1 school day")
        elif self.length is not None:
            raise ValueError(f"period {self.kind!r} takes no length")

    @classmethod
    def parse(cls, text: str) -> Period:
        kind, sep, length = text.partition(":")
        if kind == "rolling":
            if not sep or not length.isdecimal() or not length.isascii():
                raise ValueError(f"invalid period {text!r}: expected 'rolling:<school days>'")
            return cls("rolling", int(length))
        if sep or kind not in PERIOD_KINDS:
            expected = ", ".join(["rolling:<M>", *PERIOD_KINDS[1:]])
            raise ValueError(f"unknown period {text!r}: expected one of {expected}")
        return cls(kind)

    def __str__(self) -> str:
        return f"rolling:{self.length}" if self.kind == "rolling" else self.kind

    def max_days(self) -> int | None:
        """The most school days this period can hold, when that is known from the rule alone."""
        if self.kind == "rolling":
            return self.length
        return _FIXED_PERIOD_MAX_DAYS.get(self.kind)

    def describe(self, preposition: str = "over") -> str:
        if self.kind == "rolling":
            return f"{preposition} the last {self.length} school days"
        return _FIXED_PERIOD_TEXT[self.kind]


def rule_problems(
    *,
    id: object,
    kind: object,
    level: object,
    categories: object,
    n: object = None,
    k: object = None,
    x: object = None,
    p: object = None,
    over: object = None,
    min_days: object = 0,
) -> list[tuple[str, str]]:
    """Every reason the given fields do not make a valid rule, as (field, message) pairs.

    Shared by ``Rule`` (which raises on the first construction) and the pack loader (which
    reports all problems of a file with their locations).
    """
    problems: list[tuple[str, str]] = []
    if not is_slug(id):
        problems.append(("id", "must be a slug: lowercase letters, digits, '.', '_' or '-'"))
    if not is_slug(level):
        problems.append(("level", "must be a slug: lowercase letters, digits, '.', '_' or '-'"))
    if not isinstance(categories, frozenset) or not categories:
        problems.append(("categories", "must name at least one category"))
    else:
        for unknown in sorted(str(c) for c in categories if c not in CATEGORIES):
            problems.append(
                ("categories", f"unknown category {unknown!r}; known: {', '.join(CATEGORIES)}")
            )
    if kind not in RULE_KINDS:
        problems.append(("kind", f"unknown kind {kind!r}; known: {', '.join(RULE_KINDS)}"))
        return problems

    given = {"n": n, "k": k, "x": x, "p": p, "over": over}
    allowed = KIND_PARAMETERS[str(kind)]
    for name, value in given.items():
        if value is not None and name not in allowed:
            problems.append((name, f"is not a parameter of kind {kind!r}"))
    if min_days != 0 and "min_days" not in allowed:
        problems.append(("min_days", f"is not a parameter of kind {kind!r}"))
    for name in REQUIRED_PARAMETERS[str(kind)]:
        if given[name] is None:
            problems.append((name, f"is required for kind {kind!r}"))
    if over is not None and not isinstance(over, Period):
        problems.append(("over", "must be a period"))
    period = over if isinstance(over, Period) else None
    limit = period.max_days() if period is not None and "over" in allowed else None
    within = f"more than the {limit} school days {period} can hold" if period else ""

    def check_int(name: str, value: object, minimum: int) -> None:
        if value is None or name not in allowed:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append((name, "must be a whole number"))
        elif value < minimum:
            problems.append((name, f"must be at least {minimum}"))
        elif limit is not None and value > limit:
            problems.append((name, f"{value} is {within}, so the rule can never be met"))

    check_int("n", n, 1)
    check_int("k", k, 1)
    check_int("min_days", min_days, 0)
    if x is not None and "x" in allowed:
        if not isinstance(x, Decimal):
            problems.append(("x", "must be a decimal number of days"))
        else:
            units = to_units(x)
            if units is None:
                problems.append(("x", "must be a decimal number with at most 4 decimal places"))
            elif units <= 0:
                problems.append(("x", "must be greater than 0"))
            elif limit is not None and units > limit * UNITS_PER_DAY:
                problems.append(("x", f"{x} days is {within}, so the rule can never be met"))
    if p is not None and "p" in allowed:
        if not isinstance(p, Decimal):
            problems.append(("p", "must be a decimal fraction"))
        elif (problem := fraction_problem(p)) is not None:
            problems.append(("p", problem))
    return problems


def _category_text(categories: frozenset[Category]) -> str:
    if len(categories) == len(CATEGORIES):
        return "all categories"
    return ", ".join(c for c in CATEGORIES if c in categories)


@dataclass(frozen=True)
class Rule:
    id: str  # unique within a pack version, stable across versions, e.g. "consecutive-5"
    kind: RuleKind
    level: str  # routing level, e.g. "concern", "ppr-may", "warn-parents"
    categories: frozenset[Category]
    n: int | None = None  # consecutive: absence days in a row
    k: int | None = None  # count: absence days in the period
    x: Decimal | None = None  # total: sum of c(d) in days
    p: Decimal | None = None  # share: fraction, 0.10 = 10%
    over: Period | None = None
    min_days: int = 0  # share: school days the period must hold before the rule can be met

    def __post_init__(self) -> None:
        problems = rule_problems(
            id=self.id,
            kind=self.kind,
            level=self.level,
            categories=self.categories,
            n=self.n,
            k=self.k,
            x=self.x,
            p=self.p,
            over=self.over,
            min_days=self.min_days,
        )
        if problems:
            details = "; ".join(f"{field} {message}" for field, message in problems)
            raise ValueError(f"invalid rule {self.id!r}: {details}")

    @property
    def threshold(self) -> Decimal:
        value = {"consecutive": self.n, "count": self.k, "total": self.x, "share": self.p}
        return Decimal(value[self.kind])  # type: ignore[arg-type]  # set per kind, checked

    def describe(self) -> str:
        cats = _category_text(self.categories)
        over = self.over
        if self.kind == "consecutive":
            return f"{self.n} consecutive absence days ({cats})"
        assert over is not None
        if self.kind == "count":
            return f"{self.k} absence days {over.describe('of')} ({cats})"
        if self.kind == "total":
            assert self.x is not None
            return f"{format_decimal(self.x, 1)} days absent {over.describe()} ({cats})"
        assert self.p is not None
        minimum = f", once it has {self.min_days} school days" if self.min_days else ""
        return f"{format_percent(self.p)}% absence {over.describe()}{minimum} ({cats})"


@dataclass(frozen=True)
class RulePackVersion:
    version: str  # label, e.g. "1"
    effective_from: dt.date
    day_threshold: Decimal
    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        if not is_slug(self.version):
            raise ValueError(f"invalid version label {self.version!r}")
        if (problem := fraction_problem(self.day_threshold)) is not None:
            raise ValueError(f"version {self.version}: day_threshold {problem}")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"version {self.version}: duplicate rule id {rule.id!r}")
            seen.add(rule.id)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


@dataclass(frozen=True)
class RulePack:
    id: str  # e.g. "dk-aalborg-2018"
    name: str
    source: str  # where the rules come from: seed document, law, guidance
    versions: tuple[RulePackVersion, ...]  # sorted by effective_from

    def __post_init__(self) -> None:
        if not is_slug(self.id):
            raise ValueError(f"invalid pack id {self.id!r}")
        if not self.versions:
            raise ValueError(f"pack {self.id}: needs at least one version")
        labels = [v.version for v in self.versions]
        if len(set(labels)) != len(labels):
            raise ValueError(f"pack {self.id}: duplicate version labels")
        starts = [v.effective_from for v in self.versions]
        if any(a >= b for a, b in itertools.pairwise(starts)):
            raise ValueError(
                f"pack {self.id}: versions must have distinct effective_from dates, "
                "sorted ascending"
            )

    def version_on(self, d: dt.date) -> RulePackVersion | None:
        for version in reversed(self.versions):
            if version.effective_from <= d:
                return version
        return None


@dataclass(frozen=True)
class Contribution:
    date: dt.date
    category: Category
    extent: Decimal
    slot: str


@dataclass(frozen=True)
class Crossing:
    pack_id: str
    rule_id: str
    rule_version: str  # the pack version in force on the crossing date
    level: str
    kind: RuleKind
    date: dt.date  # the crossing date d_i
    window_first: dt.date  # first school day of the window ending at d_i
    window_last: dt.date  # == date
    window_days: int  # school days in the window
    value: Decimal  # absence days (consecutive, count), sum of c(d) (total) or share (share)
    threshold: Decimal  # n, k, x or p
    contributing: tuple[Contribution, ...]
    summary: str
