"""Rule packs as data: parse and validate pack documents, load the shipped TOML packs.

A pack document is a mapping (from TOML, or JSON through the API)::

    id = "dk-aalborg-2018"
    name = "..."
    source = "..."
    [[versions]]
    version = "1"
    effective_from = 2018-10-01      # TOML date or "YYYY-MM-DD"
    day_threshold = "0.5"            # optional, default 0.5
    [[versions.rules]]
    id = "consecutive-5"
    kind = "consecutive"             # consecutive | count | total | share
    n = 5                            # consecutive: n; count: k, over; total: x, over;
    categories = ["unauthorized"]    # share: p, over, min_days (optional, default 0)
    level = "concern"

Decimals (x, p, day_threshold) may be strings, integers or TOML floats; floats are read by
their written digits, never by their binary value. Validation reports every problem of a
document at once, each with its location (``versions[0].rules[2].k``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, cast

from opspor_shared.engine.model import (
    CATEGORIES,
    DEFAULT_DAY_THRESHOLD,
    KIND_PARAMETERS,
    RULE_KINDS,
    Category,
    Period,
    Rule,
    RuleKind,
    RulePack,
    RulePackVersion,
    fraction_problem,
    is_slug,
    rule_problems,
)
from opspor_shared.text import control_problem

_PACK_KEYS = ("id", "name", "source", "versions")
_VERSION_KEYS = ("version", "effective_from", "day_threshold", "rules")
_RULE_KEYS = ("id", "kind", "level", "categories", "n", "k", "x", "p", "over", "min_days")
_SLUG_TEXT = "must be a slug: lowercase letters, digits, '.', '_' or '-'"


class PackError(ValueError):
    """A pack document with problems; ``problems`` lists (location, message) pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]], origin: str = "") -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        self.origin = origin
        where = f" {origin}" if origin else ""
        details = "; ".join(f"{location}: {message}" for location, message in self.problems)
        super().__init__(f"invalid rule pack{where}: {details}")


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, location: str, message: str) -> None:
        self.items.append((location, message))

    def table(self, value: object, location: str) -> Mapping[str, Any] | None:
        if isinstance(value, Mapping):
            return value
        self.add(location, "must be a table")
        return None

    def unknown_keys(self, table: Mapping[str, Any], known: Sequence[str], prefix: str) -> None:
        for key in table:
            if key not in known:
                self.add(f"{prefix}{key}", f"unknown key; expected one of {', '.join(known)}")

    def text(self, table: Mapping[str, Any], key: str, prefix: str, *, slug: bool) -> str | None:
        value = table.get(key)
        if value is None:
            self.add(f"{prefix}{key}", "is required")
        elif not isinstance(value, str) or not value.strip():
            self.add(f"{prefix}{key}", "must be a non-empty string")
        elif slug and not is_slug(value):
            self.add(f"{prefix}{key}", _SLUG_TEXT)
        elif (problem := control_problem(value)) is not None:
            self.add(f"{prefix}{key}", problem)
        else:
            return value
        return None

    def integer(self, value: object, location: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(location, "must be a whole number")
            return None
        return value

    def decimal(self, value: object, location: str) -> Decimal | None:
        number: Decimal | None = None
        if isinstance(value, Decimal):
            number = value
        elif isinstance(value, int) and not isinstance(value, bool):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, str):
            try:
                number = Decimal(value.strip())
            except InvalidOperation:
                number = None
        if number is None or not number.is_finite():
            self.add(location, 'must be a decimal number, e.g. "0.10"')
            return None
        return number

    def day(self, value: object, location: str) -> date | None:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.add(location, "must be a date, e.g. 2018-10-01")
        return None


def _parse_rule(raw: object, location: str, problems: _Problems) -> Rule | None:
    table = problems.table(raw, location)
    if table is None:
        return None
    prefix = f"{location}."
    before = len(problems.items)
    problems.unknown_keys(table, _RULE_KEYS, prefix)

    rule_id = table.get("id")
    kind = table.get("kind")
    level = table.get("level")
    unreadable: set[str] = set()  # fields already reported, so not reported again as missing
    for key, value in (("id", rule_id), ("kind", kind), ("level", level)):
        if value is None:
            problems.add(prefix + key, "is required")
            unreadable.add(key)

    categories: frozenset[Category] | None = None
    raw_categories = table.get("categories")
    if raw_categories is None:
        problems.add(prefix + "categories", "is required")
        unreadable.add("categories")
    elif not isinstance(raw_categories, list) or not all(
        isinstance(c, str) for c in raw_categories
    ):
        problems.add(prefix + "categories", "must be a list of category names")
        unreadable.add("categories")
    else:
        if len(set(raw_categories)) != len(raw_categories):
            problems.add(prefix + "categories", "lists a category twice")
        categories = frozenset(raw_categories)

    values: dict[str, Any] = {}
    for key in ("n", "k", "min_days"):
        if key in table:
            values[key] = problems.integer(table[key], prefix + key)
    for key in ("x", "p"):
        if key in table:
            values[key] = problems.decimal(table[key], prefix + key)
    if "over" in table:
        over = table["over"]
        values["over"] = None
        if not isinstance(over, str):
            problems.add(prefix + "over", 'must be a period such as "rolling:20" or "quarter"')
        else:
            try:
                values["over"] = Period.parse(over)
            except ValueError as exc:
                problems.add(prefix + "over", str(exc))
    unreadable.update(key for key, value in values.items() if value is None)
    if "min_days" in table and kind in RULE_KINDS and "min_days" not in KIND_PARAMETERS[kind]:
        problems.add(prefix + "min_days", f"is not a parameter of kind {kind!r}")
        values.pop("min_days", None)
        unreadable.add("min_days")

    for field, message in rule_problems(
        id=rule_id,
        kind=kind,
        level=level,
        categories=categories,
        n=values.get("n"),
        k=values.get("k"),
        x=values.get("x"),
        p=values.get("p"),
        over=values.get("over"),
        min_days=values.get("min_days") or 0,
    ):
        if field not in unreadable:
            problems.add(prefix + field, message)

    if len(problems.items) > before:
        return None
    return Rule(
        id=cast(str, rule_id),
        kind=cast(RuleKind, kind),
        level=cast(str, level),
        categories=cast(frozenset[Category], categories),
        n=values.get("n"),
        k=values.get("k"),
        x=values.get("x"),
        p=values.get("p"),
        over=values.get("over"),
        min_days=values.get("min_days") or 0,
    )


def _parse_version(raw: object, location: str, problems: _Problems) -> RulePackVersion | None:
    table = problems.table(raw, location)
    if table is None:
        return None
    prefix = f"{location}."
    before = len(problems.items)
    problems.unknown_keys(table, _VERSION_KEYS, prefix)
    label = table.get("version")
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)  # `version = 2` is an easy slip; the label is text either way
    if label is None:
        problems.add(prefix + "version", "is required")
    elif not is_slug(label):
        problems.add(prefix + "version", _SLUG_TEXT)

    effective_from = None
    if "effective_from" not in table:
        problems.add(prefix + "effective_from", "is required")
    else:
        effective_from = problems.day(table["effective_from"], prefix + "effective_from")

    threshold: Decimal | None = DEFAULT_DAY_THRESHOLD
    if "day_threshold" in table:
        threshold = problems.decimal(table["day_threshold"], prefix + "day_threshold")
        if threshold is not None and (problem := fraction_problem(threshold)) is not None:
            problems.add(prefix + "day_threshold", problem)

    rules: list[Rule] = []
    raw_rules = table.get("rules")
    if raw_rules is None:
        problems.add(prefix + "rules", "is required")
    elif not isinstance(raw_rules, list):
        problems.add(prefix + "rules", "must be a list of rule tables")
    elif not raw_rules:
        problems.add(prefix + "rules", "must list at least one rule")
    else:
        first_seen: dict[str, int] = {}
        for index, raw_rule in enumerate(raw_rules):
            rule_location = f"{prefix}rules[{index}]"
            rule = _parse_rule(raw_rule, rule_location, problems)
            if rule is not None:
                rules.append(rule)
            rule_id = raw_rule.get("id") if isinstance(raw_rule, Mapping) else None
            if isinstance(rule_id, str):
                if rule_id in first_seen:
                    problems.add(
                        f"{rule_location}.id",
                        f"duplicate rule id {rule_id!r}, also used by rules[{first_seen[rule_id]}]",
                    )
                else:
                    first_seen[rule_id] = index

    if len(problems.items) > before:
        return None
    assert isinstance(label, str) and effective_from is not None and threshold is not None
    return RulePackVersion(label, effective_from, threshold, tuple(rules))


def parse_pack(data: Mapping[str, Any], origin: str = "") -> RulePack:
    """Validate a pack document and build the pack; raise PackError listing every problem."""
    problems = _Problems()
    if not isinstance(data, Mapping):
        raise PackError([("", "a rule pack must be a table")], origin)
    problems.unknown_keys(data, _PACK_KEYS, "")
    pack_id = problems.text(data, "id", "", slug=True)
    name = problems.text(data, "name", "", slug=False)
    source = problems.text(data, "source", "", slug=False)

    versions: list[RulePackVersion] = []
    raw_versions = data.get("versions")
    if raw_versions is None:
        problems.add("versions", "is required")
    elif not isinstance(raw_versions, list):
        problems.add("versions", "must be a list of version tables")
    elif not raw_versions:
        problems.add("versions", "must list at least one version")
    else:
        labels: dict[str, int] = {}
        starts: dict[date, int] = {}
        for index, raw_version in enumerate(raw_versions):
            location = f"versions[{index}]"
            version = _parse_version(raw_version, location, problems)
            if version is None:
                continue
            versions.append(version)
            if version.version in labels:
                problems.add(
                    f"{location}.version",
                    f"duplicate version {version.version!r}, "
                    f"also used by versions[{labels[version.version]}]",
                )
            else:
                labels[version.version] = index
            if version.effective_from in starts:
                problems.add(
                    f"{location}.effective_from",
                    f"{version.effective_from.isoformat()} is also the effective_from of "
                    f"versions[{starts[version.effective_from]}]; versions may not overlap",
                )
            else:
                starts[version.effective_from] = index

    if problems.items:
        raise PackError(problems.items, origin)
    assert pack_id is not None and name is not None and source is not None
    ordered = tuple(sorted(versions, key=lambda v: v.effective_from))
    return RulePack(id=pack_id, name=name, source=source, versions=ordered)


def load_pack_file(path: str | os.PathLike[str] | Traversable) -> RulePack:
    origin = str(path)
    if isinstance(path, str | os.PathLike):
        with open(path, "rb") as handle:
            raw = handle.read()
    else:
        raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"), parse_float=Decimal)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PackError([("", f"not a valid TOML document: {exc}")], origin) from exc
    return parse_pack(data, origin)


@cache
def builtin_packs() -> dict[str, RulePack]:
    """The packs shipped in ``opspor_shared/packs``, keyed by id (loaded once)."""
    packs: dict[str, RulePack] = {}
    folder = resources.files("opspor_shared") / "packs"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        pack = load_pack_file(entry)
        stem = entry.name.removesuffix(".toml")
        if pack.id != stem:
            raise PackError([("id", f"must match the file name {stem!r}")], entry.name)
        packs[pack.id] = pack
    return packs


def pack_document(pack: RulePack) -> dict[str, Any]:
    """The canonical JSON form of a pack: what the API stores and answers, and what its digest
    covers, so two documents that mean the same pack have the same digest."""

    def rule(r: Rule) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": r.id,
            "kind": r.kind,
            "level": r.level,
            "categories": [c for c in CATEGORIES if c in r.categories],
        }
        for key in KIND_PARAMETERS[r.kind]:
            value = getattr(r, key)
            if key == "over":
                value = str(value)
            elif isinstance(value, Decimal):
                value = format(value.normalize(), "f")
            out[key] = value
        return out

    return {
        "id": pack.id,
        "name": pack.name,
        "source": pack.source,
        "versions": [
            {
                "version": v.version,
                "effective_from": v.effective_from.isoformat(),
                "day_threshold": format(v.day_threshold.normalize(), "f"),
                "rules": [rule(r) for r in v.rules],
            }
            for v in pack.versions
        ],
    }


def pack_digest(pack: RulePack) -> str:
    canonical = json.dumps(pack_document(pack), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@cache
def builtin_digest(pack_id: str) -> str:
    """The digest of a shipped pack, computed once (shipped packs never change at run time)."""
    return pack_digest(builtin_packs()[pack_id])
