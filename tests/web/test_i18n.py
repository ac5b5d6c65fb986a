"""The translations: the committed .mo files are the compiled .po files (a fresh clone works
without a build step), and every text the pages can show is translated into Danish and
Norwegian bokmål."""

from __future__ import annotations

import io
import re
import typing
from pathlib import Path

import jinja2
import jinja2.ext
import pytest
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from opspor_api.cases.schemas import EntryIn, Source
from opspor_api.cases.service import CLOSE_NEEDS, OVERDUE_REASONS
from opspor_api.reports.service import SCHOOL_LEVELS
from opspor_api.web.endpoints import FIELD_MESSAGES, REFUSALS, WEEKDAYS
from opspor_api.web.i18n import LANGUAGES, LOCALE_DIR, Formatter, negotiate
from opspor_api.web.schemas import CATEGORIES
from opspor_shared.auth import Role
from opspor_shared.casemodels import REQUIREMENTS, RESPONSIBLE, builtin_models

WEB = LOCALE_DIR.parent


def _messages(path: Path, mo: bool) -> dict[object, object]:
    with open(path, "rb") as f:
        catalog = read_mo(f) if mo else read_po(f)
    return {
        (tuple(m.id) if isinstance(m.id, (list, tuple)) else m.id): (
            tuple(m.string) if isinstance(m.string, (list, tuple)) else m.string
        )
        for m in catalog
        if m.id
    }


def used_messages() -> set[str]:
    env = jinja2.Environment(extensions=["jinja2.ext.i18n"], autoescape=True)
    found: set[str] = set()
    for template in (WEB / "templates").glob("*.html"):
        tree = env.parse(template.read_text())
        for _line, _func, message in jinja2.ext.extract_from_ast(tree, ("_", "ngettext")):
            found.update(m for m in (message if isinstance(message, tuple) else (message,)) if m)
    for module in WEB.glob("*.py"):
        found.update(re.findall(r'PageError\(\s*\d+,\s*"([^"]+)"', module.read_text()))
        found.update(re.findall(r'gettext\("([^"]+)"\)', module.read_text()))
    found.update(f"category:{c}" for c in CATEGORIES)
    found.update(f"role:{r.value}" for r in Role)
    found.update(FIELD_MESSAGES.values())
    found.update(REFUSALS.values())
    found.update(case_labels())
    found.update(WEEKDAYS)
    found.update(f"school-level:{name}" for levels in SCHOOL_LEVELS.values() for name, *_ in levels)
    found.update(("school-level:unknown", "school-level:other"))
    return found


def _literals(annotation: object) -> set[str]:
    found = {a for a in typing.get_args(annotation) if isinstance(a, str)}
    for inner in typing.get_args(annotation):
        if not isinstance(inner, str):
            found |= _literals(inner)
    return found


def case_labels() -> set[str]:
    """Every code the case page names through fmt.label: entry kinds, fields and their coded
    values (read off the API's schemas, so a new code fails here until it is translated),
    the models' outcomes and exclusions, requirements, overdue reasons and responsible roles;
    and the service's English refusal texts the page translates."""
    labels: set[str] = set()
    for entry in typing.get_args(typing.get_args(EntryIn)[0]):
        for name, info in entry.model_fields.items():
            values = _literals(info.annotation)
            if name == "kind":
                labels |= {f"kind:{k}" for k in values}
                continue
            labels.add(f"field:{info.alias or name}")
            labels |= {f"value:{v}" for v in values}
    labels |= {f"value:{v}" for v in _literals(Source)}
    for model in builtin_models().values():
        labels |= {f"value:{v}" for v in (*model.outcomes, *model.exclusions)}
    labels |= {f"requirement:{r}" for r in (*REQUIREMENTS, *CLOSE_NEEDS)}
    labels |= {f"responsible:{r}" for r in RESPONSIBLE}
    labels |= {f"overdue:{r}" for r in OVERDUE_REASONS}
    labels |= {"kind:phase-change", "kind:concern", "kind:note", "field:from", "field:close"}
    return labels | set(REQUIREMENTS.values()) | set(CLOSE_NEEDS.values())


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_the_committed_mo_is_the_compiled_po(language: str) -> None:
    po = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    mo = po.with_suffix(".mo")
    assert _messages(mo, mo=True) == _messages(po, mo=False), (
        f"{mo} is stale: run .venv/bin/pybabel compile -d {LOCALE_DIR} -D messages"
    )
    with open(po, "rb") as f:
        buffer = io.BytesIO()
        write_mo(buffer, read_po(f))
    assert buffer.getvalue(), "the catalogue compiles"


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_text_of_the_pages_is_translated(language: str) -> None:
    catalog = _messages(LOCALE_DIR / language / "LC_MESSAGES" / "messages.po", mo=False)
    used = used_messages()
    assert len(used) > 50
    singular = {k[0] if isinstance(k, tuple) else k: v for k, v in catalog.items()}
    missing = sorted(
        m
        for m in used
        if m not in singular and m not in {k[1] for k in catalog if isinstance(k, tuple)}
    )
    assert not missing, f"{language}: no translation for {missing}"
    empty = sorted(str(k) for k, v in singular.items() if not v or v == ("", ""))
    assert not empty, f"{language}: empty translations {empty}"


def test_browser_languages_choose_the_closest_we_have() -> None:
    assert negotiate(None, "nn-NO,nn;q=0.9") == "nb"
    assert negotiate(None, "no") == "nb"
    assert negotiate(None, "de-DE,en;q=0.5,da;q=0.7") == "da"
    assert negotiate(None, "en-US,en;q=0.9") == "en"
    assert negotiate(None, "fr, de;q=0.5") == "da"
    assert negotiate(None, "en;q=0, nb;q=0.1") == "nb"
    assert negotiate("en", "da") == "en"
    assert negotiate("xx", "nb") == "nb"


def test_dates_are_shown_in_the_schools_time_zone() -> None:
    from datetime import UTC, datetime

    late = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)
    assert "25.11.2026" in Formatter("da", "Europe/Copenhagen").moment(late)
    assert "24.11.2026" in Formatter("nb", "Atlantic/Reykjavik").moment(late)
    assert Formatter("nb").label("level", "egen-niveau") == "egen-niveau"
    assert Formatter("nb").label("category", "illness") == "Sykdom"
