"""What the pages show, assembled by service.py and rendered by the templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from opspor_api.cases.schemas import CaseOut, CaseSummary
from opspor_api.concerns.schemas import ConcernOut
from opspor_api.reports.schemas import (
    BaerumRow,
    CaseCountRow,
    MunicipalityPatternRow,
    NearCrossing,
    PatternRow,
)
from opspor_shared.casemodels import CaseModel, Phase
from opspor_shared.reference import SchoolRef
from opspor_shared.wording import RuleSpec

# (school id, pack id, rule version, rule id): a rule as a school's pack version defines it.
RuleKey = tuple[str, str, str, str]

CATEGORIES = ("illness", "authorized", "unauthorized")


@dataclass(frozen=True)
class LevelGroup:
    level: str
    concerns: list[ConcernOut]


@dataclass(frozen=True)
class MonthBar:
    month: date
    days: dict[str, Decimal]  # category -> absence days (sum of extents)


@dataclass(frozen=True)
class SchoolView:
    school: SchoolRef
    groups: list[LevelGroup]  # the level that needs action first comes first
    truncated: bool
    months: list[MonthBar]
    period: tuple[date, date]
    specs: dict[RuleKey, RuleSpec] = field(default_factory=dict)

    @property
    def open_count(self) -> int:
        return sum(len(g.concerns) for g in self.groups)

    @property
    def pupils(self) -> list[str]:
        return sorted({c.pupil_id for g in self.groups for c in g.concerns})


@dataclass(frozen=True)
class Day:
    date: date
    school_day: bool
    closed_reason: str | None
    absence: dict[str, Decimal] = field(default_factory=dict)  # category -> extent

    @property
    def main_category(self) -> str | None:
        return max(self.absence, key=lambda c: self.absence[c]) if self.absence else None


@dataclass(frozen=True)
class Month:
    first: date
    weeks: list[list[Day | None]]  # Monday..Friday rows; None pads days of other months


@dataclass(frozen=True)
class PupilView:
    pupil_id: str
    school: SchoolRef | None
    concerns: list[ConcernOut]
    months: list[Month]
    shows_absence: bool
    totals: dict[str, Decimal]
    cases: list[CaseSummary] = field(default_factory=list)
    phase_names: dict[str, Mapping[str, str]] = field(default_factory=dict)  # by case id
    specs: dict[RuleKey, RuleSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class SchoolCount:
    school: SchoolRef
    by_level: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_level.values())


@dataclass(frozen=True)
class MunicipalityView:
    municipality_id: str
    name: str
    schools: list[SchoolCount]
    levels: list[str]


@dataclass(frozen=True)
class Requirement:
    code: str
    met: bool


@dataclass(frozen=True)
class OpenGoal:
    entry_id: int
    text: str | None
    status: str


@dataclass(frozen=True)
class CaseView:
    """The case page: the case as its reader may see it, and what each next step still needs."""

    case: CaseOut
    model: CaseModel
    school_name: str
    timezone: str
    phase: Phase
    requirements: list[Requirement]  # the current phase's, met or not
    next_phase: Phase | None  # None: the next step is closing
    close_needs: dict[str, list[str]]  # outcome -> need codes; empty list: it may close so
    failed_contact_days: int
    goals: list[OpenGoal]  # goals with their current status, for following them up
    can_move: bool
    can_record: bool
    shows_text: bool

    @property
    def is_open(self) -> bool:
        return self.case.status == "open"


@dataclass
class FormState:
    """A refused form, shown again next to its fields with the reader's input kept."""

    form: str  # "move", "close" or an entry kind
    values: dict[str, list[str]]
    problems: list[tuple[str, str]]  # (field or "", message in the reader's language)
    status: int


@dataclass(frozen=True)
class SchoolReports:
    """The school page's report sections; None where the reader's role may not see one (PPR
    sees the concerns routed to it, not the school's absence or cases)."""

    overdue: list[CaseSummary] | None  # open cases with an overdue reason, longest waiting first
    phase_names: dict[str, str]  # phase id -> name in the reader's language
    cases: list[CaseCountRow] | None
    near: list[NearCrossing] | None
    weekdays: list[PatternRow] | None
    baerum: list[BaerumRow] | None
    report_date: date | None
    specs: dict[RuleKey, RuleSpec] = field(default_factory=dict)  # of the `near` rows' rules


@dataclass(frozen=True)
class MunicipalityRollup:
    """Case metadata, the Bærum table of every school and the municipality's absence pattern,
    for the municipality's administrator (no free text, no pupil); None for PPR, who sees
    concern counts only."""

    cases: list[CaseCountRow] | None
    baerum: list[BaerumRow] | None
    report_date: date | None
    phase_names: dict[str, str] = field(default_factory=dict)
    # The municipality's rows of the patterns report over `period` (None: no school).
    weekdays: list[MunicipalityPatternRow] = field(default_factory=list)
    months: list[MunicipalityPatternRow] = field(default_factory=list)
    period: tuple[date, date] | None = None
