"""Rule packs: the shipped ones, and packs a municipality stores, versions and all."""

from __future__ import annotations

import json
import re
import tomllib
from decimal import Decimal
from typing import Any

from opspor_api.config.repository import ConfigRepository
from opspor_api.errors import Conflict, FieldError, InvalidInput, NotFound, field_error
from opspor_api.packs.repository import PackRepository
from opspor_api.packs.schemas import RulePackOut, RulePackSummary, VersionSummary
from opspor_shared.engine import (
    PackError,
    RulePack,
    builtin_digest,
    builtin_packs,
    pack_digest,
    pack_document,
    parse_pack,
)

TOML_TYPES = ("application/toml", "text/toml")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _out(pack: RulePack, digest: str, *, stored: bool) -> RulePackOut:
    return RulePackOut(
        id=pack.id,
        name=pack.name,
        source=pack.source,
        stored=stored,
        digest=digest,
        versions=[
            VersionSummary(version=v.version, effective_from=v.effective_from)
            for v in pack.versions
        ],
        document=pack_document(pack),
    )


def shipped() -> list[RulePackOut]:
    return [_out(p, builtin_digest(p.id), stored=False) for _, p in sorted(builtin_packs().items())]


def summary(out: RulePackOut) -> RulePackSummary:
    return RulePackSummary.model_validate(out.model_dump(exclude={"document"}))


async def _municipality_exists(repo: PackRepository, municipality_id: str) -> None:
    if await ConfigRepository(repo.session).municipality(municipality_id) is None:
        raise NotFound(f"no municipality {municipality_id!r}")


async def usable(repo: PackRepository, municipality_id: str) -> list[RulePackOut]:
    await _municipality_exists(repo, municipality_id)
    own = [
        _out(parse_pack(row.document), row.digest, stored=True)
        for row in await repo.stored(municipality_id)
    ]
    return shipped() + own


async def get(repo: PackRepository, municipality_id: str | None, pack_id: str) -> RulePackOut:
    if (pack := builtin_packs().get(pack_id)) is not None:
        return _out(pack, builtin_digest(pack_id), stored=False)
    if municipality_id is not None:
        await _municipality_exists(repo, municipality_id)
        row = await repo.one(municipality_id, pack_id)
        if row is not None:
            return _out(parse_pack(row.document), row.digest, stored=True)
    raise NotFound(f"no rule pack {pack_id!r}")


def pack_location(text: str) -> tuple[str | int, ...]:
    return tuple(name or int(index) for name, index in _PART.findall(text)) or ("body",)


def _problems(exc: PackError) -> list[FieldError]:
    return [field_error(pack_location(where), message) for where, message in exc.problems]


def read_document(raw: bytes, content_type: str) -> dict[str, Any]:
    """A pack document from a JSON or TOML body; decimals keep their written digits."""
    media = content_type.split(";")[0].strip().lower()
    try:
        text = raw.decode("utf-8")
        if media in TOML_TYPES:
            data: object = tomllib.loads(text, parse_float=Decimal)
        else:
            data = json.loads(text, parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, TOMLDecodeError
        kind = "TOML" if media in TOML_TYPES else "JSON"
        reason = str(exc).splitlines()[0][:200]
        raise InvalidInput(
            f"the body is not a {kind} document", [field_error(("body",), reason)]
        ) from exc
    if not isinstance(data, dict):
        raise InvalidInput(
            "a rule pack is an object", [field_error(("body",), "must be an object")]
        )
    return data


async def put(
    repo: PackRepository, municipality_id: str, pack_id: str, document: dict[str, Any]
) -> tuple[RulePackOut, bool]:
    await _municipality_exists(repo, municipality_id)
    if pack_id in builtin_packs():
        raise Conflict(f"{pack_id!r} is a shipped pack; store your own under another id")
    errors = []
    if document.setdefault("id", pack_id) != pack_id:
        errors.append(field_error(("id",), f"must be {pack_id!r}"))
    try:
        # With the path's id, so that the rest of the document is judged in the same answer.
        pack = parse_pack(document | {"id": pack_id})
    except PackError as exc:
        errors += _problems(exc)
    if errors:
        raise InvalidInput(f"rule pack {pack_id!r} is not valid", errors)

    canonical = pack_document(pack)
    existing = await repo.one(municipality_id, pack_id, lock=True)
    if existing is not None:
        # A concern names the version that judged it, so a stored version never changes:
        # a new rule set is a new version with its own effective_from.
        given = {v["version"]: (i, v) for i, v in enumerate(canonical["versions"])}
        errors = []
        for old in existing.document["versions"]:
            found = given.get(old["version"])
            if found is None:
                errors.append(field_error(("versions",), f"version {old['version']!r} is missing"))
            elif found[1] != old:
                errors.append(
                    field_error(
                        ("versions", found[0]),
                        f"version {old['version']!r} is stored with other content; "
                        "add a new version instead of changing it",
                    )
                )
        if errors:
            raise Conflict("stored versions of a rule pack cannot change", errors)
    digest = pack_digest(pack)
    created = await repo.upsert(municipality_id, pack_id, canonical, digest)
    return _out(pack, digest, stored=True), created
