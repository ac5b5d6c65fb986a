"""Report documents. Each has `csv_header` / `csv_rows`: the CSV export is the same rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar, Literal

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
    csv_name: ClassVar[str]

    def csv_header(self) -> list[str]:
        raise NotImplementedError

    def csv_rows(self) -> Iterator[list[Any]]:
        raise NotImplementedError

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

    def csv_header(self) -> list[str]:
        return list(AbsenceRow.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in self.rows:
            yield list(row.model_dump().values())


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

    def csv_header(self) -> list[str]:
        return list(PatternRow.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in self.rows:
            yield list(row.model_dump().values())


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

    def csv_header(self) -> list[str]:
        return list(MunicipalityPatternRow.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in self.rows:
            yield list(row.model_dump().values())


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
    school_id: str
    counts: list[LevelCount]
    pupils: list[OpenConcernPupil]

    def csv_header(self) -> list[str]:
        return list(OpenConcernPupil.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in self.pupils:
            yield list(row.model_dump().values())


class OpenConcernCounts(CsvReport):
    csv_name: ClassVar[str] = "open-concerns"
    municipality_id: str
    counts: list[LevelCount]

    def csv_header(self) -> list[str]:
        return list(LevelCount.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in self.counts:
            yield list(row.model_dump().values())


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

    def csv_header(self) -> list[str]:
        return list(NearCrossing.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in self.rows:
            yield list(row.model_dump().values())


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

    def csv_header(self) -> list[str]:
        return list(BaerumRow.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in self.rows:
            yield list(row.model_dump().values())


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

    def csv_header(self) -> list[str]:
        return list(CaseCountRow.model_fields)

    def csv_rows(self) -> Iterator[list[Any]]:
        for row in self.rows:
            yield list(row.model_dump().values())
