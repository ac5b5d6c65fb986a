"""Why a date is not a school day, in words a school IT person can act on."""

from __future__ import annotations

from datetime import date

from opspor_shared.calendar import SchoolCalendar


def why_not_school_day(calendar: SchoolCalendar, d: date) -> str:
    year = calendar.school_year_of(d)
    if year is None:
        return "outside every configured school year"
    for closure in year.closures:
        if closure.first_day <= d <= closure.last_day:
            return f"closed: {closure.reason}" if closure.reason else "closed"
    if name := calendar.public_holidays(d, d).get(d):
        return f"public holiday: {name}"
    if d.weekday() >= 5:
        return "weekend"
    return "not a school day"
