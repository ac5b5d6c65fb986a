"""Request bodies validated in the route rather than before it, so that one answer can name
every error of a request: the schema's errors and the domain's (school day, retention cutoff,
unknown school, ...) together.

A route declares its body as `Annotated[Model, SkipValidation]`: the OpenAPI document shows the
model's schema, FastAPI still refuses malformed JSON, and the route receives the decoded JSON
to check with `parse`. Domain checks then run on whatever passed the schema: whole items, and
single fields of items that failed elsewhere (a batch item with a bad extent still has its
date checked against the school's calendar).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from opspor_api.errors import FieldError, InvalidInput, validation_errors

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


def parse(model: type[M], raw: object, prefix: Loc = ()) -> tuple[M | None, list[FieldError]]:
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        return None, validation_errors(exc.errors(), prefix)


def _pointer(loc: Loc) -> str:
    return "/" + "/".join(str(p) for p in loc) if loc else ""


def bad_fields(errors: Iterable[FieldError], loc: Loc) -> set[str] | None:
    """Names of the fields under `loc` that have errors; None when the object at `loc` is
    itself wrong (not an object, or a check across its fields failed)."""
    prefix = _pointer(loc)
    names: set[str] = set()
    for error in errors:
        if error.pointer == prefix or error.pointer == f"{prefix}/body":
            return None
        if error.pointer.startswith(prefix + "/"):
            names.add(error.pointer[len(prefix) + 1 :].split("/", 1)[0])
    return names


@functools.cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    return TypeAdapter(Annotated[info.annotation, info])  # type: ignore[arg-type]


def valid_fields(
    model: type[BaseModel],
    raw: object,
    errors: Iterable[FieldError],
    loc: Loc,
    names: Iterable[str],
) -> dict[str, Any]:
    """The named fields of the raw object at `loc` that passed the schema, parsed as the model
    parses them; fields that failed or are missing are left out."""
    bad = bad_fields(errors, loc)
    if bad is None or not isinstance(raw, Mapping):
        return {}
    out: dict[str, Any] = {}
    for name in names:
        if name in bad:
            continue
        if name in raw:
            out[name] = _adapter(model, name).validate_python(raw[name])
        elif not model.model_fields[name].is_required():
            out[name] = model.model_fields[name].get_default(call_default_factory=True)
    return out


def _order(error: FieldError) -> list[tuple[int, int | str]]:
    # Numeric parts compare as numbers: items/2 comes before items/10.
    return [(0, int(p)) if p.isdigit() else (1, p) for p in error.pointer.split("/")]


def refuse(errors: list[FieldError], what: str = "nothing was stored") -> None:
    """Raises one 422 naming every error, in the order of the request."""
    if errors:
        errors = sorted(errors, key=_order)
        raise InvalidInput(f"{len(errors)} invalid field(s); {what}", errors)


def path_value(
    errors: list[FieldError], name: str, value: str, kind: TypeAdapter[str]
) -> str | None:
    """A path parameter declared with SkipValidation, checked like FastAPI would; its errors
    join `errors` (as path.<name>)."""
    try:
        return kind.validate_python(value)
    except ValidationError as exc:
        errors += validation_errors(exc.errors(), ("path", name))
        return None
