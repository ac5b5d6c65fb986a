from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Response
from pydantic import RootModel, SkipValidation, TypeAdapter, ValidationError

from opspor_api.audit.service import Auditor
from opspor_api.bodies import refuse
from opspor_api.cases import service
from opspor_api.cases.repository import CaseRepository
from opspor_api.cases.schemas import (
    CaseModelOut,
    CaseOpen,
    CaseOut,
    CasePage,
    CaseSummary,
    EntryIn,
    Transition,
)
from opspor_api.deps import AppClock, Session, Settings, audited
from opspor_api.errors import PROBLEM_RESPONSES, NotFound, validation_errors
from opspor_api.validation import ID_PATTERN, PupilPathId
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role
from opspor_shared.casemodels import CaseModel, builtin_models

router = APIRouter(prefix="/v1", tags=["cases"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
Code = Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=40,
        description="The ETag of the case as read; required (428 without, 412 when stale)",
    ),
]
# Staff work cases at their schools; PPR the cases referred or brought for consultation to it;
# the municipality reads metadata.
Staff = Annotated[Principal, allow(Role.SCHOOL_STAFF)]
Worker = Annotated[Principal, allow(Role.SCHOOL_STAFF, Role.PPR)]
Reader = Annotated[Principal, allow(Role.SCHOOL_STAFF, Role.PPR, Role.MUNICIPALITY_ADMIN)]
Audit = Annotated[Auditor, audited("follow-up")]
CHANGE_RESPONSES: dict[int | str, dict[str, object]] = {
    412: {"description": "The case changed since it was read (If-Match is stale)"},
    428: {"description": "If-Match is missing"},
}


def _model_out(model: CaseModel) -> CaseModelOut:
    return CaseModelOut(
        id=model.id,
        version=model.version,
        source=model.source,
        name=dict(model.names),
        opening_levels=list(model.opening_levels),
        default_length_days=model.default_length_days,
        evaluation_days=model.evaluation_days,
        evaluation_from=model.evaluation_from,
        outcomes=list(model.outcomes),
        exclusions=list(model.exclusions),
        interventions=[{"code": i.code, "name": dict(i.names)} for i in model.interventions],
        phases=[
            {
                "id": p.id,
                "name": dict(p.names),
                "responsible": p.responsible,
                "requires": list(p.requires),
            }
            for p in model.phases
        ],
    )


@router.get("/case-models", response_model=list[CaseModelOut], summary="The shipped case models")
async def list_models(_reader: Reader) -> list[CaseModelOut]:
    return [_model_out(m) for _, m in sorted(builtin_models().items())]


@router.get("/case-models/{model_id}", response_model=CaseModelOut, summary="One case model")
async def get_model(model_id: PathId, _reader: Reader) -> CaseModelOut:
    model = builtin_models().get(model_id)
    if model is None:
        raise NotFound(f"no case model {model_id!r}")
    return _model_out(model)


ENTRY = TypeAdapter(EntryIn)


class EntryBody(RootModel[EntryIn]):
    """The body as the OpenAPI document shows it; checked in the route (parse_entry)."""


def parse_entry(raw: object) -> Any:
    """The entry, or a 422 naming each bad field as the client wrote it: pydantic puts the
    union's tag (the `kind`) into each location, which is not a place in the body."""
    try:
        return ENTRY.validate_python(raw)
    except ValidationError as exc:
        kind = raw.get("kind") if isinstance(raw, dict) else None
        errors = [
            e | {"loc": e["loc"][1:]} if e["loc"] and e["loc"][0] == kind else e
            for e in exc.errors()
        ]
        refuse(validation_errors(errors), "nothing was recorded")
        raise


Admin = Annotated[Principal, allow(Role.MUNICIPALITY_ADMIN)]


@router.put(
    "/municipalities/{municipality_id}/case-models/{model_id}",
    response_model=CaseModelOut,
    summary="Store the municipality's own case model (never changed once stored)",
    responses={409: {"description": "A shipped id, or a stored model with other content"}},
)
async def put_model(
    municipality_id: PathId,
    model_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")],
    body: Annotated[
        dict[str, Any], Body(description="A case model document (see GET /v1/case-models)")
    ],
    principal: Admin,
    session: Session,
    response: Response,
) -> CaseModelOut:
    model, created = await service.put_model(
        CaseRepository(session), principal, municipality_id, model_id, body
    )
    response.status_code = 201 if created else 200
    return _model_out(model)


@router.get(
    "/municipalities/{municipality_id}/case-models",
    response_model=list[CaseModelOut],
    summary="The case models the municipality can pick: shipped and its own",
)
async def municipality_models(
    municipality_id: PathId, principal: Admin, session: Session
) -> list[CaseModelOut]:
    if municipality_id != principal.municipality:
        raise NotFound(f"no municipality {municipality_id!r}")
    models = await service.models_of(CaseRepository(session), municipality_id)
    return [_model_out(m) for _, m in sorted(models.items())]


def _answer(response: Response, case: CaseOut) -> CaseOut:
    response.headers["ETag"] = f'"{case.version}"'
    return case


@router.post(
    "/schools/{school_id}/cases",
    response_model=CaseOut,
    status_code=201,
    summary="Open a case by hand, saying where the worry came from",
)
async def open_case(
    school_id: PathId,
    body: CaseOpen,
    principal: Staff,
    session: Session,
    settings: Settings,
    clock: AppClock,
    audit: Audit,
    response: Response,
) -> CaseOut:
    repo = CaseRepository(session, settings.cases_topic)
    loaded = await service.open_by_hand(repo, principal, school_id, body, clock())
    await audit.record([(body.pupil_id, school_id)], 201)
    return _answer(response, await service.case_out(repo, loaded, with_text=True))


@router.get("/cases/{case_id}", response_model=CaseOut, summary="One case with its history")
async def get_case(
    case_id: uuid.UUID,
    principal: Reader,
    session: Session,
    settings: Settings,
    audit: Audit,
    response: Response,
) -> CaseOut:
    repo = CaseRepository(session, settings.cases_topic)
    case = await service.read_case(repo, principal, case_id)
    await audit.record([(case.pupil_id, case.school_id)], 200)
    return _answer(response, case)


@router.post(
    "/cases/{case_id}/entries",
    response_model=CaseOut,
    status_code=201,
    responses=CHANGE_RESPONSES,
    summary="Record a goal, intervention, cause, contact, evaluation, referral, decision ...",
)
async def add_entry(
    case_id: uuid.UUID,
    body: Annotated[EntryBody, SkipValidation],
    principal: Worker,
    session: Session,
    settings: Settings,
    clock: AppClock,
    audit: Audit,
    response: Response,
    if_match: IfMatch = None,
) -> CaseOut:
    repo = CaseRepository(session, settings.cases_topic)
    entry = parse_entry(body)
    loaded = await service.add_entry(repo, principal, case_id, if_match, entry, clock())
    await audit.record([(loaded.case.pupil_id, loaded.case.school_id)], 201)
    return _answer(response, await service.case_out(repo, loaded, with_text=True))


@router.post(
    "/cases/{case_id}/transitions",
    response_model=CaseOut,
    responses=CHANGE_RESPONSES,
    summary="Move the case to its next phase, or close it with an outcome",
)
async def transition(
    case_id: uuid.UUID,
    body: Transition,
    principal: Staff,
    session: Session,
    settings: Settings,
    clock: AppClock,
    audit: Audit,
    response: Response,
    if_match: IfMatch = None,
) -> CaseOut:
    repo = CaseRepository(session, settings.cases_topic)
    loaded = await service.transition(repo, principal, case_id, if_match, body, clock())
    await audit.record([(loaded.case.pupil_id, loaded.case.school_id)], 200)
    return _answer(response, await service.case_out(repo, loaded, with_text=True))


@router.get("/pupils/{pupil_id}/cases", response_model=list[CaseSummary], summary="A pupil's cases")
async def pupil_cases(
    pupil_id: PupilPathId, principal: Reader, session: Session, audit: Audit
) -> list[CaseSummary]:
    rows = await service.pupil_cases(CaseRepository(session), principal, pupil_id)
    await audit.record([(pupil_id, c.school_id) for c in rows], 200)
    return rows


@router.get(
    "/schools/{school_id}/cases",
    response_model=CasePage,
    summary="A school's cases, newest first, filtered by phase, coordinator and overdue state",
)
async def school_cases(
    school_id: PathId,
    principal: Reader,
    session: Session,
    audit: Audit,
    phase: Code | None = None,
    status: Literal["open", "closed"] | None = None,
    coordinator: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    overdue: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> CasePage:
    filters = {"phase": phase, "status": status, "coordinator": coordinator, "overdue": overdue}
    page = await service.school_cases(
        CaseRepository(session), principal, school_id, filters, cursor, limit
    )
    await audit.record([(c.pupil_id, c.school_id) for c in page.items], 200)
    return page
