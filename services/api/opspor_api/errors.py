"""One error hierarchy, one handler: every error is an RFC 9457 problem document.

Bad input is always a 4xx naming the offending fields (for a batch, by item index); a 500 is
reserved for our own bugs and never carries internal details.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError
from asyncpg.exceptions import PostgresConnectionError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from opspor_api.registrations.metrics import REFUSED
from opspor_shared.access import AccessError, route_rules
from opspor_shared.logging import get_logger
from opspor_shared.outage import Outage, is_database_outage

UNAVAILABLE = Counter(
    "opspor_api_unavailable_total",
    "Requests answered 503: a dependency unreachable",
    ["dependency"],
)

log = get_logger(__name__)
PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the bad field, e.g. items[3].extent")
    pointer: str = Field(description="JSON Pointer into the request body, e.g. /items/3/extent")
    detail: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    status = 400
    type = "urn:opspor:problem:bad-request"
    title = "Bad request"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class NotFound(ProblemError):
    status = 404
    type = "urn:opspor:problem:not-found"
    title = "Not found"


class Conflict(ProblemError):
    status = 409
    type = "urn:opspor:problem:conflict"
    title = "Conflict"


class InvalidInput(ProblemError):
    status = 422
    type = "urn:opspor:problem:validation"
    title = "The request is not valid"


class PayloadTooLarge(ProblemError):
    status = 413
    type = "urn:opspor:problem:payload-too-large"
    title = "Request body too large"


class TooManyRequests(ProblemError):
    status = 429
    type = "urn:opspor:problem:rate-limited"
    title = "Too many requests"


def field_error(loc: tuple[str | int, ...] | list[str | int], detail: str) -> FieldError:
    field = ""
    for part in loc:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += f".{part}" if field else str(part)
    return FieldError(field=field, pointer="/" + "/".join(str(p) for p in loc), detail=detail)


def problem_response(
    status: int,
    title: str,
    type_: str,
    detail: str | None,
    request: Request,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=type_,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


# FastAPI puts where the error is first ("body", "query", "path"); the body prefix is noise for
# the caller, the others tell them which part of the request to fix.
def _location(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    parts = [p for p in loc if isinstance(p, str | int)]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return tuple(parts) or ("body",)


def _message(error: dict[str, Any]) -> str:
    msg = str(error.get("msg", "invalid value"))
    # Pydantic prefixes custom errors with "Value error, ".
    return msg.removeprefix("Value error, ")


def validation_errors(
    errors: Sequence[Any], prefix: tuple[str | int, ...] = ()
) -> list[FieldError]:
    """Pydantic's errors as field errors, under `prefix` (e.g. ("items", 3))."""
    out = []
    for e in errors:
        loc = _location(tuple(e["loc"]))
        if prefix:
            loc = prefix + (() if loc == ("body",) else loc)
        out.append(field_error(loc, _message(e)))
    return out


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """The methods of the most specific path templates matching the path: as in OpenAPI, a
    concrete segment (`/rule-packs/dry-run`) wins over a template (`/rule-packs/{pack_id}`)."""
    path = request.scope["path"]
    matching = [
        (method, template)
        for method, template in route_rules(app)
        if method != "*" and compile_path(template)[0].match(path)
    ]
    fewest = min((t.count("{") for _, t in matching), default=0)
    return sorted({method for method, template in matching if template.count("{") == fewest})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.type, exc.detail, request, exc.errors)

    @app.exception_handler(AccessError)
    async def _access(request: Request, exc: AccessError) -> JSONResponse:
        return exc.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors())
        if request.url.path.startswith("/v1/registrations"):
            REFUSED.labels("invalid_field").inc(len(errors))
        fields = ", ".join(sorted({e.field for e in errors})[:20])
        return problem_response(
            422,
            InvalidInput.title,
            InvalidInput.type,
            f"{len(errors)} invalid field(s): {fields}",
            request,
            errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # FastAPI has a route per method, and Starlette's Allow names only the first
            # route that matched the path: list every method the path supports.
            headers["Allow"] = ", ".join(allowed_methods(app, request))
        return problem_response(
            exc.status_code,
            str(exc.detail),
            "about:blank",
            None,
            request,
            headers=headers or None,
        )

    # Handlers for these classes run inside the app (a handler for plain Exception runs in the
    # server-error layer, which re-raises: one failure, two tracebacks in the log).
    for cls in (OSError, DBAPIError, SQLAlchemyTimeoutError, PostgresConnectionError, KafkaError):
        app.add_exception_handler(cls, _maybe_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path, error=type(exc).__name__)
        return problem_response(
            500,
            "Internal server error",
            "about:blank",
            "The error was logged; nothing from this request was stored.",
            request,
        )


RETRY_AFTER_SECONDS = 5


def unavailable_dependency(exc: BaseException) -> str | None:
    """ "database" or "broker" when `exc` says a dependency cannot be reached; None otherwise."""
    if isinstance(exc, KafkaError):
        return "broker"
    # The api makes no network calls in a request other than to the database (token keys
    # have their own 503), so a refused or reset connection is the database's.
    return "database" if is_database_outage(exc) else None


async def _maybe_unavailable(request: Request, exc: Exception) -> JSONResponse:
    dependency = unavailable_dependency(exc)
    if dependency is None:
        log.exception("unhandled_error", path=request.url.path, error=type(exc).__name__)
        return problem_response(
            500,
            "Internal server error",
            "about:blank",
            "The error was logged; nothing from this request was stored.",
            request,
        )
    outage: Outage | None = getattr(request.app.state, f"{dependency}_outage", None)
    if outage is not None:
        outage.failed(type(exc).__name__)  # logs when the outage starts, not per request
    UNAVAILABLE.labels(dependency).inc()
    return problem_response(
        503,
        "Service unavailable",
        "urn:opspor:problem:unavailable",
        f"The {dependency} cannot be reached; nothing from this request was stored. "
        "Retry later with the same event ids.",
        request,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": description}
    for status, description in (
        (400, "The body could not be decoded at all (not UTF-8); malformed JSON is a 422"),
        (401, "No valid bearer token (see WWW-Authenticate)"),
        (403, "The token's role may not use this endpoint"),
        (404, "Not found (or outside the token's schools or municipality)"),
        (405, "The path does not support this method; `Allow` lists the methods it does"),
        (409, "Conflict"),
        (413, "Request body too large"),
        (
            422,
            "Invalid input; `errors` names every bad field, both against the schema and against "
            "rules no schema can express (an unknown school, a date that is not a school day or "
            "is older than the retention period, a national ID number as pupil id)",
        ),
        (429, "Rate limit exceeded; retry after `Retry-After` seconds"),
        (
            503,
            "The database is unreachable, or token keys could not be fetched from the "
            "identity provider; nothing was stored, retry after `Retry-After` seconds",
        ),
    )
}
