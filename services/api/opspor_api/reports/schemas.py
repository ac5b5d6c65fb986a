"""Report documents. Each is a CsvReport: the CSV export is the same rows as the JSON."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, Field

Scope = Literal["class", "grade", "school", "municipality"]


# A cell starting with one of these is a formula to a spreadsheet (CSV injection); class names
# come from school systems, so such a cell is quoted as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class CsvReport(BaseModel):
    """A report whose CSV has a line per item of one of its list fields (`csv_rows_field`),
    a column per field of the item."""

    csv_name: ClassVar[str]
    csv_rows_field: ClassVar[str] = "rows"

    def csv_header(self) -> list[str]:
        (item,) = get_args(type(self).model_fields[self.csv_rows_field].annotation)
        return list(item.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in getattr(self, self.csv_rows_field):
            yield list(row.model_dump().values())

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(self.csv_header())
        writer.writerows([_cell(v) for v in row] for row in self.csv_rows())
        return buffer.getvalue()


class AbsenceRow(BaseModel):
    scope: Scope = Field(description="What the row sums: one class, a grade, a school, or all")
    school_id: str | None = Field(description="Null on the municipality row")
    grade: int | None = Field(description="Null when unknown (no enrolment) or on a total row")
    class_name: str | None
    pupils: int
    pupil_days: int = Field(description="School days of these pupils in the period (divisor)")
    illness_days: Decimal = Field(description="Sum of c(d) for illness over those days")
    authorized_days: Decimal
    unauthorized_days: Decimal
    illness_share: Decimal | None = Field(description="illness_days / pupil_days, 4 decimals")
    authorized_share: Decimal | None
    unauthorized_share: Decimal | None


class AbsenceReport(CsvReport):
    csv_name: ClassVar[str] = "absence"
    period_from: date
    period_to: date
    rows: list[AbsenceRow]


class PatternRow(BaseModel):
    kind: Literal["weekday", "month"]
    key: str = Field(description="ISO weekday 1-7 (Monday 1), or the month as YYYY-MM")
    pupil_days: int
    illness_share: Decimal | None
    authorized_share: Decimal | None
    unauthorized_share: Decimal | None
    total_share: Decimal | None = Field(description="All categories: sum of the three shares")


class PatternReport(CsvReport):
    csv_name: ClassVar[str] = "patterns"
    school_id: str
    period_from: date
    period_to: date
    rows: list[PatternRow]


class _OfSchool(BaseModel):
    school_id: str | None = Field(description="Null on the municipality rows")


# _OfSchool is the last base so that pydantic, which orders inherited fields from the last base
# on, puts school_id first: the other roll-ups' rows (and CSV columns) start with it too.
class MunicipalityPatternRow(PatternRow, _OfSchool):
    """A school's share per weekday or month, or (school null) the municipality's: its sums
    of c(d) and pupil school days pooled over the schools, not an average of their shares."""


class MunicipalityPatternReport(CsvReport):
    csv_name: ClassVar[str] = "patterns"
    municipality_id: str
    period_from: date
    period_to: date
    rows: list[MunicipalityPatternRow]


class OpenConcernPupil(BaseModel):
    level: str
    pupil_id: str
    grade: int | None
    class_name: str | None
    concerns: int = Field(description="Active concerns of the pupil at this level")
    latest_crossing: date


class LevelCount(BaseModel):
    school_id: str | None = Field(description="Null on the municipality total")
    level: str
    pupils: int


class OpenConcernsReport(CsvReport):
    csv_name: ClassVar[str] = "open-concerns"
    csv_rows_field: ClassVar[str] = "pupils"
    school_id: str
    counts: list[LevelCount]
    pupils: list[OpenConcernPupil]


class OpenConcernCounts(CsvReport):
    csv_name: ClassVar[str] = "open-concerns"
    csv_rows_field: ClassVar[str] = "counts"
    municipality_id: str
    counts: list[LevelCount]


class NearCrossing(BaseModel):
    pupil_id: str
    grade: int | None
    class_name: str | None
    pack_id: str
    rule_id: str
    rule_version: str
    level: str
    rule: str = Field(description="The rule in words")
    more_days: Literal[1, 2] = Field(description="Further absence days that would cross it")
    crossing_date: date = Field(description="The school day it would be crossed on")


class CloseToLimitReport(CsvReport):
    csv_name: ClassVar[str] = "close-to-limit"
    school_id: str
    horizon: date | None = Field(description="The last school day on or before the report date")
    pupils: int = Field(description="Distinct pupils in `rows`")
    rows: list[NearCrossing]


class BaerumRow(BaseModel):
    school_id: str | None = Field(description="Null on the municipality rows")
    school_level: str = Field(
        description="DK indskoling 0-3, mellemtrin 4-6, udskoling 7-9; "
        "NO barneskole 1-7, ungdomsskole 8-10; `unknown` without a grade"
    )
    pupils: int = Field(description="Pupils enrolled on the report date")
    completely_absent: int = Field(
        description="Pupils absent (any category, c(d) >= 0.5) on every one of their last "
        "20 school days up to the report date"
    )
    consulted: int = Field(
        description="Pupils whose case was brought to PPR/PPT for consultation in the school "
        "year up to the report date, and not (yet) formally referred"
    )
    referred: int = Field(
        description="Pupils whose case was formally referred to PPR/PPT in the school year up "
        "to the report date"
    )
    ppr_total: int = Field(description="consulted + referred: each pupil counts once")


class BaerumReport(CsvReport):
    csv_name: ClassVar[str] = "baerum"
    report_date: date
    rows: list[BaerumRow]


class CaseCountRow(BaseModel):
    school_id: str | None = Field(description="Null on the municipality rows")
    dimension: Literal["phase", "coordinator", "overdue-reason"]
    key: str = Field(
        description="The phase, the coordinator (`none`: no coordinator named), "
        "or the overdue reason"
    )
    open_cases: int
    overdue_cases: int = Field(description="Of these, cases with at least one overdue reason")


class CaseReport(CsvReport):
    csv_name: ClassVar[str] = "cases"
    rows: list[CaseCountRow]
