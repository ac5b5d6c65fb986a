from __future__ import annotations

import copy
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from opspor_shared.engine import (
    PackError,
    Period,
    Rule,
    RulePack,
    builtin_packs,
    load_pack_file,
    parse_pack,
)

ALL = {"illness", "authorized", "unauthorized"}
UNAUTHORIZED = {"unauthorized"}
NOT_ILLNESS = {"authorized", "unauthorized"}

# DOMAIN.md section 5, row by row: (pack, kind, parameters, categories, level).
DOMAIN_TABLE: list[tuple[str, str, dict[str, Any], set[str], str]] = [
    ("dk-aalborg-2018", "consecutive", {"n": 5}, UNAUTHORIZED, "concern"),
    ("dk-aalborg-2018", "count", {"k": 7, "over": "rolling:20"}, UNAUTHORIZED, "concern"),
    ("dk-aalborg-2018", "count", {"k": 15, "over": "rolling:60"}, UNAUTHORIZED, "concern"),
    ("dk-aalborg-2018", "count", {"k": 10, "over": "school_year"}, ALL, "ppr-may"),
    ("dk-aalborg-2018", "count", {"k": 40, "over": "school_year"}, ALL, "ppr-must"),
    ("dk-slagelse-2019", "consecutive", {"n": 5}, NOT_ILLNESS, "concern"),
    ("dk-slagelse-2019", "count", {"k": 5, "over": "rolling:20"}, NOT_ILLNESS, "concern"),
    ("dk-slagelse-2019", "count", {"k": 15, "over": "rolling:60"}, NOT_ILLNESS, "concern"),
    (
        "dk-national",
        "share",
        {"p": "0.10", "over": "quarter", "min_days": 20},
        UNAUTHORIZED,
        "warn-parents",
    ),
    (
        "dk-national",
        "share",
        {"p": "0.15", "over": "quarter", "min_days": 20},
        UNAUTHORIZED,
        "notify-municipality",
    ),
    ("en-dfe", "share", {"p": "0.10", "over": "school_year", "min_days": 10}, ALL, "persistent"),
    ("en-dfe", "share", {"p": "0.50", "over": "school_year", "min_days": 10}, ALL, "severe"),
    ("en-dfe", "total", {"x": "5.0", "over": "rolling:50"}, UNAUTHORIZED, "penalty-notice"),
    ("en-dfe", "consecutive", {"n": 10}, UNAUTHORIZED, "notify-la"),
    ("us-chronic", "share", {"p": "0.10", "over": "school_year", "min_days": 10}, ALL, "chronic"),
    ("no-loten", "consecutive", {"n": 3}, ALL, "call-home"),
]


def _signature(rule: Rule) -> tuple[str, dict[str, Any], set[str], str]:
    params: dict[str, Any] = {}
    for name in ("n", "k", "x", "p"):
        value = getattr(rule, name)
        if value is not None:
            params[name] = str(value) if isinstance(value, Decimal) else value
    if rule.over is not None:
        params["over"] = str(rule.over)
    if rule.min_days:
        params["min_days"] = rule.min_days
    return rule.kind, params, set(rule.categories), rule.level


def test_all_six_packs_ship() -> None:
    assert sorted(builtin_packs()) == [
        "dk-aalborg-2018",
        "dk-national",
        "dk-slagelse-2019",
        "en-dfe",
        "no-loten",
        "us-chronic",
    ]


@pytest.mark.parametrize("pack_id", sorted({row[0] for row in DOMAIN_TABLE}))
def test_shipped_pack_matches_the_domain_table(pack_id: str) -> None:
    pack = builtin_packs()[pack_id]
    assert len(pack.versions) == 1
    version = pack.versions[0]
    assert version.day_threshold == Decimal("0.5")
    assert pack.name and pack.source
    expected = [row[1:] for row in DOMAIN_TABLE if row[0] == pack_id]
    assert [_signature(rule) for rule in version.rules] == expected


def test_aalborg_takes_effect_on_its_publication_date() -> None:
    aalborg = builtin_packs()["dk-aalborg-2018"]
    assert aalborg.version_on(date(2018, 9, 30)) is None
    version = aalborg.version_on(date(2018, 10, 1))
    assert version is not None and version.version == "1"


def test_shipped_files_load_from_disk_the_same() -> None:
    folder = resources.files("opspor_shared") / "packs"
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            pack = load_pack_file(Path(str(entry)))
            assert builtin_packs()[pack.id] == pack


def test_builtin_packs_are_loaded_once() -> None:
    assert builtin_packs() is builtin_packs()


VALID: dict[str, Any] = {
    "id": "test-pack",
    "name": "Test pack",
    "source": "tests",
    "versions": [
        {
            "version": "1",
            "effective_from": "2024-08-01",
            "day_threshold": "0.5",
            "rules": [
                {
                    "id": "consecutive-5",
                    "kind": "consecutive",
                    "n": 5,
                    "categories": ["unauthorized"],
                    "level": "concern",
                },
                {
                    "id": "count-7-of-20",
                    "kind": "count",
                    "k": 7,
                    "over": "rolling:20",
                    "categories": ["unauthorized"],
                    "level": "concern",
                },
                {
                    "id": "share-10-quarter",
                    "kind": "share",
                    "p": "0.10",
                    "over": "quarter",
                    "min_days": 20,
                    "categories": ["unauthorized"],
                    "level": "warn-parents",
                },
                {
                    "id": "total-5-of-50",
                    "kind": "total",
                    "x": "5.0",
                    "over": "rolling:50",
                    "categories": ["illness", "authorized", "unauthorized"],
                    "level": "penalty-notice",
                },
            ],
        }
    ],
}

RULE = "versions[0].rules"
R = "versions.0.rules"
DELETE = object()


def _location(path: str) -> str:
    """versions.0.rules.1.k -> versions[0].rules[1].k"""
    parts: list[str] = []
    for part in path.split("."):
        if part.isdigit():
            parts[-1] += f"[{part}]"
        else:
            parts.append(part)
    return ".".join(parts)


def _edit(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value


def _add_version(document: dict[str, Any], **changes: Any) -> None:
    version = copy.deepcopy(document["versions"][0])
    version.update(changes)
    document["versions"].append(version)


# (what is wrong, where, the wrong value, part of the message)
MISTAKES: list[tuple[str, str, Any, str]] = [
    ("line break in the name", "name", "Aalborg\r\nBcc: x@y.dk", "control character U+000D"),
    ("unknown kind", f"{R}.0.kind", "streak", "unknown kind"),
    ("missing parameter", f"{R}.1.k", DELETE, "required"),
    ("missing period", f"{R}.1.over", DELETE, "required"),
    ("extra parameter", f"{R}.1.n", 3, "not a parameter"),
    ("min_days on count", f"{R}.1.min_days", 0, "not a parameter"),
    ("period on consecutive", f"{R}.0.over", "month", "not a parameter"),
    ("zero k", f"{R}.1.k", 0, "at least 1"),
    ("negative n", f"{R}.0.n", -1, "at least 1"),
    ("text k", f"{R}.1.k", "7", "whole number"),
    ("boolean n", f"{R}.0.n", True, "whole number"),
    ("k above the window", f"{R}.1.k", 21, "never be met"),
    ("zero x", f"{R}.3.x", "0", "greater than 0"),
    ("x above the window", f"{R}.3.x", "50.5", "never be met"),
    ("x not a number", f"{R}.3.x", "five", "decimal number"),
    ("p above one", f"{R}.2.p", "1.5", "at most 1"),
    ("zero p", f"{R}.2.p", "0", "greater than 0"),
    ("p too precise", f"{R}.2.p", "0.12345", "4 decimal places"),
    ("negative min_days", f"{R}.2.min_days", -1, "at least 0"),
    ("min_days above a quarter", f"{R}.2.min_days", 93, "92 school days"),
    ("unknown category", f"{R}.0.categories", ["sick"], "'sick'"),
    ("empty categories", f"{R}.0.categories", [], "at least one"),
    ("category twice", f"{R}.0.categories", ["illness", "illness"], "twice"),
    ("categories not a list", f"{R}.0.categories", "illness", "list"),
    ("unknown period", f"{R}.1.over", "weekly", "unknown period"),
    ("rolling without length", f"{R}.1.over", "rolling", "rolling:<"),
    ("rolling of zero", f"{R}.1.over", "rolling:0", "at least 1"),
    ("missing level", f"{R}.0.level", DELETE, "required"),
    ("bad rule id", f"{R}.0.id", "Five in a row", "slug"),
    ("duplicate rule id", f"{R}.1.id", "consecutive-5", "duplicate rule id"),
    ("unknown rule key", f"{R}.0.weight", 2, "unknown key"),
    ("day_threshold zero", "versions.0.day_threshold", "0", "greater than 0"),
    ("day_threshold above one", "versions.0.day_threshold", "1.5", "at most 1"),
    ("bad effective_from", "versions.0.effective_from", "2024-13-01", "date"),
    ("missing effective_from", "versions.0.effective_from", DELETE, "required"),
    ("no rules", "versions.0.rules", [], "at least one rule"),
    ("no versions", "versions", [], "at least one version"),
    ("bad pack id", "id", "Test pack", "slug"),
    ("missing name", "name", DELETE, "required"),
    ("empty source", "source", " ", "non-empty"),
    ("unknown pack key", "colour", "blue", "unknown key"),
]


def _problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(PackError) as caught:
        parse_pack(document)
    for location, _ in caught.value.problems:
        assert location in str(caught.value)
    return caught.value.problems


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [mistake[1:] for mistake in MISTAKES],
    ids=[mistake[0] for mistake in MISTAKES],
)
def test_validation_names_the_location(path: str, value: Any, message: str) -> None:
    document = copy.deepcopy(VALID)
    _edit(document, path, value)

    ((location, text),) = _problems(document)

    assert location == _location(path)
    assert message in text


def test_duplicate_version_labels_are_refused() -> None:
    document = copy.deepcopy(VALID)
    _add_version(document, effective_from="2025-08-01")
    assert _problems(document) == [
        ("versions[1].version", "duplicate version '1', also used by versions[0]")
    ]


def test_versions_with_the_same_effective_from_are_refused() -> None:
    document = copy.deepcopy(VALID)
    _add_version(document, version="2")
    ((location, text),) = _problems(document)
    assert location == "versions[1].effective_from"
    assert "may not overlap" in text


def test_count_within_a_month_is_possible() -> None:
    document = copy.deepcopy(VALID)
    _edit(document, f"{R}.1.over", "month")
    assert parse_pack(document).versions[0].rules[1].over == Period("month")


def test_valid_document_parses() -> None:
    pack = parse_pack(VALID)
    assert isinstance(pack, RulePack)
    rules = pack.versions[0].rules
    assert rules[1] == Rule(
        "count-7-of-20", "count", "concern", frozenset({"unauthorized"}), k=7,
        over=Period("rolling", 20),
    )  # fmt: skip
    assert rules[2].p == Decimal("0.10")
    assert rules[3].x == Decimal("5.0")


def test_all_problems_are_reported_together() -> None:
    document = copy.deepcopy(VALID)
    document["versions"][0]["rules"][0]["n"] = 0
    document["versions"][0]["rules"][1]["over"] = "fortnight"
    document["versions"][0]["day_threshold"] = "2"
    document["name"] = ""

    with pytest.raises(PackError) as caught:
        parse_pack(document)

    assert [location for location, _ in caught.value.problems] == [
        "name",
        "versions[0].day_threshold",
        f"{RULE}[0].n",
        f"{RULE}[1].over",
    ]


def test_versions_are_sorted_by_effective_from() -> None:
    document = copy.deepcopy(VALID)
    _add_version(document, version="0", effective_from="2020-01-01")
    pack = parse_pack(document)
    assert [v.version for v in pack.versions] == ["0", "1"]
    assert pack.version_on(date(2019, 12, 31)) is None
    assert pack.version_on(date(2024, 7, 31)) == pack.versions[0]
    assert pack.version_on(date(2024, 8, 1)) == pack.versions[1]


def test_day_threshold_defaults_to_a_half() -> None:
    document = copy.deepcopy(VALID)
    del document["versions"][0]["day_threshold"]
    assert parse_pack(document).versions[0].day_threshold == Decimal("0.5")


def test_floats_are_read_by_their_written_digits(tmp_path: Path) -> None:
    path = tmp_path / "floats.toml"
    path.write_text(
        'id = "floats"\nname = "n"\nsource = "s"\n'
        "[[versions]]\nversion = 1\neffective_from = 2024-08-01\nday_threshold = 0.5\n"
        '[[versions.rules]]\nid = "share"\nkind = "share"\np = 0.1\nover = "quarter"\n'
        'categories = ["illness"]\nlevel = "concern"\n',
        encoding="utf-8",
    )
    pack = load_pack_file(path)
    assert pack.versions[0].rules[0].p == Decimal("0.1")
    assert pack.versions[0].version == "1"
    assert parse_pack({**copy.deepcopy(VALID), "id": "f"}).id == "f"


def test_invalid_toml_is_a_pack_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('id = "broken\n', encoding="utf-8")
    with pytest.raises(PackError, match="not a valid TOML document") as caught:
        load_pack_file(path)
    assert str(path) in str(caught.value)


def test_pack_error_is_a_value_error() -> None:
    assert issubclass(PackError, ValueError)


def test_period_text_round_trips() -> None:
    for text in ("rolling:20", "month", "quarter", "half_year", "school_year"):
        assert str(Period.parse(text)) == text


def test_rules_built_in_code_are_validated_too() -> None:
    with pytest.raises(ValueError, match="k 21 is more than the 20 school days"):
        Rule("r", "count", "concern", frozenset({"illness"}), k=21, over=Period("rolling", 20))


def test_rules_describe_themselves() -> None:
    descriptions = {r.id: r.describe() for r in builtin_packs()["en-dfe"].versions[0].rules}
    assert descriptions == {
        "share-10-school-year": "10% absence this school year, once it has 10 school days "
        "(all categories)",
        "share-50-school-year": "50% absence this school year, once it has 10 school days "
        "(all categories)",
        "total-5-of-50": "5.0 days absent over the last 50 school days (unauthorized)",
        "consecutive-10": "10 consecutive absence days (unauthorized)",
    }
    aalborg = builtin_packs()["dk-aalborg-2018"].versions[0].rules
    assert aalborg[1].describe() == "7 absence days of the last 20 school days (unauthorized)"
