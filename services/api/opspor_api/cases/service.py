"""Cases: the follow-up after a concern (DOMAIN.md s.7), by the municipality's case model.

A case is opened by a concern of an opening level (the api's concern consumer calls
`on_concerns`) or by hand. Everything recorded on it is an entry; a phase is left only when the
model's requirements are recorded, checked here against the entries. Every change bumps the
case's version (its ETag) and publishes a case event through the api's outbox. `check_overdue`
judges the clocks when the school's day changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, exists, false, func

from opspor_api.cases.metrics import OVERDUE
from opspor_api.cases.repository import CaseRepository
from opspor_api.cases.schemas import (
    Approval,
    Assignment,
    CaseOpen,
    CaseOut,
    CasePage,
    CaseSummary,
    Contact,
    Eligibility,
    EntryIn,
    EntryOut,
    Evaluation,
    Goal,
    InterventionIn,
    Plan,
    Referral,
    Transition,
)
from opspor_api.cursors import decode_cursor, encode_cursor
from opspor_api.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    ProblemError,
    field_error,
)
from opspor_api.models import Case, CaseEntry, Municipality, School
from opspor_api.packs.service import pack_location
from opspor_api.tenancy import may_use_school
from opspor_shared.auth import Principal, Role
from opspor_shared.casemodels import (
    LEFT,
    NO_CONCERN_AFTER_CONTACT,
    NO_CONTACT,
    NOT_ELIGIBLE,
    REQUIREMENTS,
    CaseModel,
    CaseModelError,
    Phase,
    builtin_models,
    default_model_id,
    parse_model,
)
from opspor_shared.events import (
    CASE_CLOSED,
    CASE_EVALUATION_DUE,
    CASE_OPENED,
    CASE_OVERDUE,
    CASE_PHASE_CHANGED,
    CASE_REFERRED,
    CloudEvent,
    ConcernData,
)
from opspor_shared.logging import correlation_id, get_logger
from opspor_shared.outbox import OutboxMessage

log = get_logger(__name__)

# Overdue reminders repeat while a reason lasts, but not daily: a week apart.
REMIND_EVERY = timedelta(days=7)
FAILED_CONTACTS_FOR_NO_CONTACT = 3
# Why a case is overdue (DOMAIN.md s.7), as stored on the case and published.
OVERDUE_REASONS = ("evaluation-overdue", "planned-end-passed", "ppr-referral-missing")


class PreconditionRequired(ProblemError):
    status = 428
    title = "If-Match required"
    type = "urn:opspor:problem:precondition-required"


class PreconditionFailed(ProblemError):
    status = 412
    title = "The case changed since you read it"
    type = "urn:opspor:problem:precondition-failed"


def etag(case: Case) -> str:
    return f'"{case.version}"'


async def models_of(repo: CaseRepository, municipality_id: str) -> dict[str, CaseModel]:
    """The models a municipality can use: the shipped ones and those it stored."""
    models = dict(builtin_models())
    for row in await repo.stored_models(municipality_id):
        models[row.id] = parse_model(row.document)
    return models


async def model_for(repo: CaseRepository, school: School, municipality: Municipality) -> CaseModel:
    chosen = school.case_model or municipality.case_model or default_model_id(municipality.country)
    return (await models_of(repo, municipality.id))[chosen]


async def school_model(repo: CaseRepository, school_id: str) -> CaseModel:
    """The model a new case at the school follows."""
    found = await repo.school(school_id)
    if found is None:
        raise NotFound(f"no school {school_id!r}")
    return await model_for(repo, *found)


async def put_model(
    repo: CaseRepository, principal: Principal, municipality_id: str, model_id: str, raw: object
) -> tuple[CaseModel, bool]:
    """Stores a municipality's own model: every mistake named by its place; a shipped id or a
    different document under a stored id is refused (stored models never change)."""
    if municipality_id != principal.municipality:
        raise NotFound(f"no municipality {municipality_id!r}")
    if not isinstance(raw, dict):
        raise InvalidInput(
            "the model must be a JSON object", [field_error(("body",), "not an object")]
        )
    document = dict(raw) | {"id": model_id}
    if model_id in builtin_models():
        raise Conflict(
            f"{model_id!r} is a shipped model; store yours under another id",
            [field_error(("path", "model_id"), "names a shipped model")],
        )
    try:
        model = parse_model(document)
    except CaseModelError as exc:
        raise InvalidInput(
            f"{len(exc.problems)} mistake(s) in the model; nothing was stored",
            [field_error(pack_location(where), what) for where, what in exc.problems],
        ) from None
    stored = {row.id: row.document for row in await repo.stored_models(municipality_id)}
    if model_id in stored:
        if stored[model_id] != document:
            raise Conflict(
                f"the model {model_id!r} is stored already and never changes (cases follow it); "
                "store a changed model under a new id and pick that"
            )
        return model, False
    await repo.insert_model(municipality_id, model_id, document)
    return model, True


def today_at(school: School, now: datetime) -> date:
    return now.astimezone(ZoneInfo(school.timezone)).date()


def summary(case: Case, model: CaseModel) -> CaseSummary:
    phase = model.phase(case.phase)
    return CaseSummary(
        id=case.id,
        pupil_id=case.pupil_id,
        school_id=case.school_id,
        municipality_id=case.municipality_id,
        model_id=case.model_id,
        phase=case.phase,
        responsible_role=phase.responsible if phase else "school-leader",
        status=case.status,  # type: ignore[arg-type]
        source=case.source,
        coordinator=case.coordinator,
        leader=case.leader,
        opened_on=case.opened_on,
        planned_end=case.planned_end,
        next_evaluation_due=case.next_evaluation_due,
        overdue_reasons=list(case.overdue_reasons),
        outcome=case.outcome,
        closed_on=case.closed_on,
        version=case.version,
    )


def _ppr_involved(entries: Sequence[CaseEntry]) -> bool:
    return any(e.kind == "referral" and e.data.get("to") == "ppr" for e in entries)


def sees_case(principal: Principal, case: Case, entries: Sequence[CaseEntry]) -> bool:
    """Staff: cases of their schools. PPR: cases referred or brought for consultation to PPR.
    The municipality's administrator: every case of the municipality, metadata only."""
    if principal.municipality != case.municipality_id:
        return False
    if principal.role is Role.SCHOOL_STAFF:
        return may_use_school(principal, case.school_id, case.municipality_id)
    if principal.role is Role.PPR:
        return _ppr_involved(entries)
    return principal.role is Role.MUNICIPALITY_ADMIN


def full_text_reader(principal: Principal) -> bool:
    return principal.role in (Role.SCHOOL_STAFF, Role.PPR)


@dataclass
class Loaded:
    case: Case
    model: CaseModel
    school: School
    entries: list[CaseEntry]


async def load(
    repo: CaseRepository, principal: Principal, case_id: uuid.UUID, *, lock: bool = False
) -> Loaded:
    case = await repo.get(case_id, lock=lock)
    entries = await repo.entries(case_id) if case is not None else []
    if case is None or not sees_case(principal, case, entries):
        raise NotFound(f"no case {case_id}")
    found = await repo.school(case.school_id)
    assert found is not None  # a case's school is a foreign key
    models = await models_of(repo, case.municipality_id)
    return Loaded(case, models[case.model_id], found[0], entries)


async def case_out(repo: CaseRepository, loaded: Loaded, with_text: bool) -> CaseOut:
    texts = await repo.texts([e.id for e in loaded.entries]) if with_text else {}
    return CaseOut(
        **summary(loaded.case, loaded.model).model_dump(),
        entries=[
            EntryOut(
                id=e.id,
                kind=e.kind,
                data=e.data,
                concern_id=e.concern_id,
                at=e.at,
                by=e.by,
                text=texts.get(e.id),
            )
            for e in loaded.entries
        ],
    )


def _message(
    topic: str, case: Case, event_type: str, event_id: str, now: datetime, **data: Any
) -> OutboxMessage:
    payload: dict[str, Any] = {
        "case_id": str(case.id),
        "pupil_id": case.pupil_id,
        "school_id": case.school_id,
        "municipality_id": case.municipality_id,
        "model_id": case.model_id,
        "phase": case.phase,
        "status": case.status,
        "opened_on": case.opened_on.isoformat(),
        "version": case.version,
    } | data
    return OutboxMessage(
        topic=topic,
        key=case.pupil_id,
        event=CloudEvent(
            id=event_id,
            source="/opspor/api/cases",
            type=event_type,
            time=now,
            subject=str(case.id),
            data=payload,
        ),
        correlation_id=correlation_id.get(),
    )


def _version_event(
    repo: CaseRepository, case: Case, event_type: str, now: datetime, **data: Any
) -> OutboxMessage:
    # Deterministic per change: the same version of a case is the same event.
    return _message(
        repo.topic, case, event_type, f"{case.id}:{case.version}:{event_type}", now, **data
    )


def _check_if_match(case: Case, if_match: str | None) -> None:
    if if_match is None:
        raise PreconditionRequired(
            "send If-Match with the ETag of the case as you read it; two people editing one "
            "case must not overwrite each other"
        )
    if if_match.strip() not in (etag(case), f"W/{etag(case)}", "*"):
        raise PreconditionFailed(
            f"the case is at version {case.version}; read it again and repeat your change"
        )


def _schedule(model: CaseModel, case: Case, from_day: date) -> None:
    if model.evaluation_days:
        case.next_evaluation_due = from_day + timedelta(days=model.evaluation_days)


def _clock_from_opening(model: CaseModel) -> bool:
    """The ladder's resource team meets every 14 days from the start; Bærum evaluates three
    weeks after each plan, so its clock waits for the first one (CaseModel.evaluation_from)."""
    return bool(model.evaluation_days) and model.evaluation_from == "opening"


async def _new_case(
    repo: CaseRepository,
    school: School,
    municipality: Municipality,
    pupil_id: str,
    source: str,
    by: str,
    now: datetime,
    coordinator: str | None = None,
) -> Case | None:
    model = await model_for(repo, school, municipality)
    today = today_at(school, now)
    case_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": case_id,
        "pupil_id": pupil_id,
        "school_id": school.id,
        "municipality_id": municipality.id,
        "model_id": model.id,
        "model_version": model.version,
        "phase": model.phases[0].id,
        "status": "open",
        "source": source,
        "coordinator": coordinator,
        "opened_on": today,
        "opened_by": by,
        "version": 1,
        "next_evaluation_due": (
            today + timedelta(days=model.evaluation_days) if _clock_from_opening(model) else None
        ),
    }
    if not await repo.insert_case(values):
        return None
    case = await repo.get(case_id)
    assert case is not None
    await repo.add_entry(case_id, "phase-change", {"from": None, "to": case.phase}, by)
    messages = [_version_event(repo, case, CASE_OPENED, now, source=source)]
    if case.next_evaluation_due is not None:
        messages.append(
            _version_event(
                repo, case, CASE_EVALUATION_DUE, now, due_date=case.next_evaluation_due.isoformat()
            )
        )
    await repo.publish(messages)
    return case


async def open_by_hand(
    repo: CaseRepository, principal: Principal, school_id: str, body: CaseOpen, now: datetime
) -> Loaded:
    found = await repo.school(school_id)
    if found is None or not may_use_school(principal, school_id, found[0].municipality_id):
        raise NotFound(f"no school {school_id!r}")
    school, municipality = found
    if await repo.open_case(body.pupil_id, school_id) is not None:
        raise Conflict(
            "the pupil already has an open case at this school; record on that case",
            [field_error(("pupil_id",), "has an open case at this school")],
        )
    case = await _new_case(
        repo,
        school,
        municipality,
        body.pupil_id,
        body.source,
        principal.subject,
        now,
        body.coordinator,
    )
    if case is None:
        raise Conflict("the pupil already has an open case at this school")
    if body.note:
        await repo.add_entry(case.id, "note", {}, principal.subject, body.note)
    return await load(repo, principal, case.id)


# --- requirements -------------------------------------------------------------------------


def latest_goals(entries: Sequence[CaseEntry]) -> dict[int, str]:
    """Each goal's current status: a follow-up entry replaces the status of the goal it names."""
    status: dict[int, str] = {}
    for e in entries:
        if e.kind == "goal":
            target = e.data.get("goal_entry") or e.id
            status[int(target)] = str(e.data.get("status", "open"))
    return status


# Who counts as whom in `with` (DOMAIN.md s.7): the family, the home, is the `parents` code
# (parents or guardians); the pupil is `pupil`; the school `school`.
FAMILY = "parents"
# R.O.S.'s "meeting with school, pupil and family" and Bærum's "with pupil and parents": the
# school's own staff record it, so `with` names whom they met: the pupil and the family.
MEETING_WITH = frozenset({"pupil", FAMILY})
# R.O.S.: "agreement sheets with the pupil, the family and the school": parties to a document,
# each named (R.O.S. itself may be one more).
AGREEMENT_WITH = frozenset({"pupil", FAMILY, "school"})
# The ladder's plan: "how pupil and home take part" (seed 001).
SUPPORT_PLAN_WITH = frozenset({"pupil", FAMILY})


def _with(entry: CaseEntry) -> set[str]:
    return set(entry.data.get("with") or ())


def _home_contact(entry: CaseEntry, texted: Collection[int]) -> bool:
    """A contact with the home and its outcome (Bærum: "the contact teacher's call home"): it
    reached the parents, it was no sparring among staff, its outcome was written (whether,
    never what: the text is not read here)."""
    return (
        entry.kind == "contact"
        and bool(entry.data.get("reached"))
        and entry.data.get("form") != "sparring"
        and FAMILY in _with(entry)
        and entry.id in texted
    )


def _eligible(entry: CaseEntry, texted: Collection[int]) -> bool:
    if entry.kind != "eligibility" or not entry.data.get("eligible"):
        return False
    basis = entry.data.get("basis")
    return basis == "limit-crossed" or (basis == "staff-judgement" and entry.id in texted)


def _not_eligible(entry: CaseEntry, texted: Collection[int]) -> bool:
    """A not-eligible decision with its reason: an exclusion, or a note for a staff reason."""
    return (
        entry.kind == "eligibility"
        and not entry.data.get("eligible")
        and (bool(entry.data.get("exclusions")) or entry.id in texted)
    )


def _support_plan(entry: CaseEntry, texted: Collection[int]) -> bool:
    return (
        entry.kind == "action-plan"
        and _with(entry) >= SUPPORT_PLAN_WITH
        and bool(entry.data.get("until"))
        and bool(entry.data.get("follow_up"))
        and entry.id in texted
    )


def _met(
    requirement: str, case: Case, entries: Sequence[CaseEntry], texted: Collection[int]
) -> bool:
    kinds = [e.kind for e in entries]
    if requirement == "eligibility-decision":
        return any(_eligible(e, texted) for e in entries)
    if requirement == "meeting":
        return any(
            e.kind == "contact"
            and e.data.get("form") == "meeting"
            and e.data.get("reached")
            and _with(e) >= MEETING_WITH
            for e in entries
        )
    if requirement == "action-plan":
        return "action-plan" in kinds
    if requirement == "support-plan":
        return any(_support_plan(e, texted) for e in entries)
    if requirement == "goal":
        return "goal" in kinds
    if requirement == "contact":
        return any(_home_contact(e, texted) for e in entries)
    if requirement == "causes":
        return "cause" in kinds
    if requirement == "goals-followed-up":
        goals = latest_goals(entries)
        return bool(goals) and all(s != "open" for s in goals.values())
    if requirement == "agreement":
        return any(e.kind == "agreement" and _with(e) >= AGREEMENT_WITH for e in entries)
    if requirement == "cooperation-agreement":
        return "agreement" in kinds
    if requirement == "leader":
        return case.leader is not None
    if requirement == "coordinator":
        return case.coordinator is not None
    if requirement == "follow-up-date":
        # A date the team agreed and recorded, not the model's own interval set at opening.
        return any(
            (e.kind == "evaluation" and e.data.get("due"))
            or (e.kind == "action-plan" and e.data.get("follow_up"))
            for e in entries
        )
    if requirement == "sparring":
        return any(e.kind == "contact" and e.data.get("form") == "sparring" for e in entries)
    if requirement == "intervention":
        return "intervention" in kinds
    if requirement == "evaluation-escalate":
        return any(e.kind == "evaluation" and e.data.get("result") == "escalate" for e in entries)
    raise AssertionError(f"unknown requirement {requirement}")  # the model parser refuses it


def missing(
    model: CaseModel, case: Case, entries: Sequence[CaseEntry], texted: Collection[int]
) -> list[str]:
    phase = model.phase(case.phase)
    assert phase is not None
    return [r for r in phase.requires if not _met(r, case, entries, texted)]


def failed_contact_days(entries: Sequence[CaseEntry]) -> int:
    return len(_failed_contact_days(entries))


def _failed_contact_days(entries: Sequence[CaseEntry]) -> set[str]:
    return {str(e.data["on"]) for e in entries if e.kind == "contact" and not e.data.get("reached")}


# What closing with an outcome can need beyond a phase's requirements (codes, so the web page
# can say it in the reader's language; the API answers with these English texts).
CLOSE_NEEDS: dict[str, str] = {
    "failed-contacts": (
        f"failed contact attempts on {FAILED_CONTACTS_FOR_NO_CONTACT} different days"
    ),
    "no-contact-approval": "a leader's approval of closing without contact",
    "not-eligible-decision": "an eligibility decision of not eligible, with its reason",
    "resolved-evaluation": "an evaluation that found the problem resolved",
}


def describe_need(code: str, entries: Sequence[CaseEntry]) -> str:
    if code == "failed-contacts":
        return f"{CLOSE_NEEDS[code]} ({len(_failed_contact_days(entries))} recorded)"
    return CLOSE_NEEDS.get(code) or REQUIREMENTS[code]


def close_missing(
    model: CaseModel,
    case: Case,
    entries: Sequence[CaseEntry],
    outcome: str,
    texted: Collection[int],
) -> list[str]:
    """What closing with this outcome still needs (DOMAIN.md s.7), as codes of REQUIREMENTS
    and CLOSE_NEEDS."""
    if outcome == NO_CONTACT:
        needs = []
        if len(_failed_contact_days(entries)) < FAILED_CONTACTS_FOR_NO_CONTACT:
            needs.append("failed-contacts")
        if not any(e.kind == "approval" and e.data.get("of") == NO_CONTACT for e in entries):
            needs.append("no-contact-approval")
        return needs
    if outcome == NOT_ELIGIBLE:
        decided = any(_not_eligible(e, texted) for e in entries)
        return [] if decided else ["not-eligible-decision"]
    if outcome == NO_CONCERN_AFTER_CONTACT:
        # Bærum: the call home found no worry; the same call the identification phase needs.
        return [] if _met("contact", case, entries, texted) else ["contact"]
    if outcome in LEFT:
        return []
    needs = missing(model, case, entries, texted)
    if model.evaluation_days and not any(
        e.kind == "evaluation" and e.data.get("result") == "resolved" for e in entries
    ):
        needs.append("resolved-evaluation")
    return needs


# --- changes -------------------------------------------------------------------------------


def _entry_data(body: EntryIn) -> tuple[dict[str, Any], str | None]:
    """(structured data, free text) of an entry."""
    raw = body.model_dump(mode="json", by_alias=True, exclude_none=True)
    raw.pop("kind")
    text_field = (
        "text" if isinstance(body, Goal) else "outcome" if isinstance(body, Contact) else "note"
    )
    text = raw.pop(text_field, None)
    return raw, text


def _entry_errors(model: CaseModel, loaded: Loaded, body: EntryIn) -> list[FieldError]:
    errors: list[FieldError] = []
    if isinstance(body, InterventionIn):
        codes = {i.code for i in model.interventions} | {"other"}
        if body.type not in codes:
            errors.append(
                field_error(
                    ("type",), f"not in the {model.id} catalogue: {', '.join(sorted(codes))}"
                )
            )
        if body.end is not None and body.end < body.start:
            errors.append(field_error(("end",), "is before start"))
    if (
        isinstance(body, Goal)
        and body.goal_entry is not None
        and not any(e.id == body.goal_entry and e.kind == "goal" for e in loaded.entries)
    ):
        errors.append(field_error(("goal_entry",), "is not a goal of this case"))
    if isinstance(body, Evaluation) and body.done is None and body.due is None:
        errors.append(field_error(("due",), "give a due date (a follow-up agreed) or done"))
    if isinstance(body, Evaluation) and body.done is None and body.result is not None:
        errors.append(field_error(("done",), "a result needs the day the evaluation was done"))
    if isinstance(body, Evaluation) and body.done is not None and body.result is None:
        # An evaluation held ends its clock only with a result (DOMAIN.md s.7: overdue is a
        # date passed "without a result"); a held evaluation without one would hide the case.
        errors.append(
            field_error(
                ("result",),
                "an evaluation held says its result: continue, new-plan, escalate or resolved",
            )
        )
    if isinstance(body, Eligibility):
        errors += _eligibility_errors(model, body)
    if isinstance(body, Plan) and body.kind == "action-plan" and _requires(model, "support-plan"):
        errors += _support_plan_errors(body)
    return errors


def _written(text: str | None) -> bool:
    return text is not None and text.strip() != ""


def _requires(model: CaseModel, requirement: str) -> bool:
    return any(requirement in phase.requires for phase in model.phases)


def _eligibility_errors(model: CaseModel, body: Eligibility) -> list[FieldError]:
    """A decision says why (DOMAIN.md s.7): eligible on its basis, a staff judgement with its
    reason; not eligible with an exclusion reason of the model or, for a staff reason (and in
    a model without exclusions), a note: "a not-eligible decision is recorded, never silent"."""
    errors: list[FieldError] = []
    for i, code in enumerate(body.exclusions):
        if code not in model.exclusions:
            errors.append(
                field_error(
                    ("exclusions", i),
                    f"not an exclusion reason of {model.id}: "
                    + (", ".join(model.exclusions) or "the model has none"),
                )
            )
    noted = _written(body.note)
    if body.eligible:
        if body.exclusions:
            errors.append(
                field_error(
                    ("exclusions",),
                    "an exclusion reason means not eligible: decide not eligible, or remove it",
                )
            )
        if body.basis is None:
            errors.append(
                field_error(
                    ("basis",),
                    "an eligible decision needs its basis: limit-crossed or staff-judgement",
                )
            )
        elif body.basis == "staff-judgement" and not noted:
            errors.append(field_error(("note",), "a staff judgement needs its reason in the note"))
    elif not noted and not any(code in model.exclusions for code in body.exclusions):
        if model.exclusions:
            reason = "a not-eligible decision needs its reason: an exclusion reason, or a note"
            errors.append(field_error(("exclusions",), reason))
            errors.append(field_error(("note",), reason))
        else:
            errors.append(
                field_error(("note",), "a not-eligible decision needs its reason in the note")
            )
    return errors


def _support_plan_errors(body: Plan) -> list[FieldError]:
    """The ladder's plan (REQUIREMENTS["support-plan"]), refused without its parts where the
    model asks for it, so a plan on record is a whole plan."""
    errors: list[FieldError] = []
    if not set(body.with_) >= SUPPORT_PLAN_WITH:
        errors.append(
            field_error(
                ("with",), "include the pupil and the parents: the plan says how they take part"
            )
        )
    if body.until is None:
        errors.append(field_error(("until",), "say how long the plan runs: its last day"))
    if body.follow_up is None:
        errors.append(field_error(("follow_up",), "say when the plan is followed up"))
    if not _written(body.note):
        errors.append(
            field_error(
                ("note",), "describe the support in class and how the pupil and home take part"
            )
        )
    return errors


async def add_entry(
    repo: CaseRepository,
    principal: Principal,
    case_id: uuid.UUID,
    if_match: str | None,
    body: EntryIn,
    now: datetime,
) -> Loaded:
    loaded = await load(repo, principal, case_id, lock=True)
    case, model = loaded.case, loaded.model
    _check_if_match(case, if_match)
    if case.status != "open":
        raise Conflict("the case is closed; open a new case if the worry comes back")
    if errors := _entry_errors(model, loaded, body):
        raise InvalidInput("the entry cannot be recorded", errors)
    data, text = _entry_data(body)
    await repo.add_entry(case.id, body.kind, data, principal.subject, text)
    case.version += 1
    messages: list[OutboxMessage] = []
    if isinstance(body, Assignment):
        case.coordinator = body.coordinator or case.coordinator
        case.leader = body.leader or case.leader
    if isinstance(body, Approval):
        case.leader = case.leader or body.leader
    rescheduled = isinstance(body, Evaluation)
    if isinstance(body, Plan) and body.follow_up is not None:
        # The ladder's clock is "the follow-up date of each plan" (DOMAIN.md s.7); a date the
        # team agreed wins over the model's interval.
        case.next_evaluation_due = body.follow_up
        rescheduled = True
    elif isinstance(body, Plan) and model.evaluation_from == "plan" and model.evaluation_days:
        # Bærum: "evaluation 3 weeks after each plan" (an action plan or the cooperation
        # agreement), counted from the school's day the plan is recorded.
        _schedule(model, case, today_at(loaded.school, now))
        rescheduled = True
    if isinstance(body, Evaluation):
        if body.done is not None:
            case.next_evaluation_due = None
            if body.result in ("continue", "new-plan"):
                # Bærum: a new three-week plan, evaluated again after the model's interval.
                _schedule(model, case, body.done)
        if body.due is not None and body.done is None:
            case.next_evaluation_due = body.due
    if rescheduled and case.next_evaluation_due is not None:
        messages.append(
            _version_event(
                repo,
                case,
                CASE_EVALUATION_DUE,
                now,
                due_date=case.next_evaluation_due.isoformat(),
            )
        )
    if isinstance(body, Referral):
        messages.append(
            _version_event(
                repo, case, CASE_REFERRED, now, to=body.to, referral=body.type, status=body.status
            )
        )
    # A recorded evaluation or referral ends its reason at once, not at the next check.
    current = _reasons(
        case, await repo.entries(case.id), today_at(loaded.school, now), ppr_must=True
    )
    case.overdue_reasons = [r for r in case.overdue_reasons if r in current]
    await repo.publish(messages)
    await repo.session.flush()
    return await load(repo, principal, case.id)


async def transition(
    repo: CaseRepository,
    principal: Principal,
    case_id: uuid.UUID,
    if_match: str | None,
    body: Transition,
    now: datetime,
) -> Loaded:
    if (body.to is None) == (body.close is None):
        raise InvalidInput(
            "say where the case goes: `to` (the next phase) or `close` (an outcome)",
            [field_error(("to",), "give `to` or `close`, not both")],
        )
    loaded = await load(repo, principal, case_id, lock=True)
    case, model, entries = loaded.case, loaded.model, loaded.entries
    # Which entries carry text: read here, where a requirement needs it, not on every load.
    texted = await repo.texted(case.id)
    _check_if_match(case, if_match)
    if case.status != "open":
        raise Conflict("the case is closed")
    today = today_at(loaded.school, now)
    previous = case.phase
    if body.close is not None:
        if body.close not in model.outcomes:
            raise InvalidInput(
                "not an outcome of this model",
                [field_error(("close",), f"expected one of {', '.join(model.outcomes)}")],
            )
        needs = close_missing(model, case, entries, body.close, texted)
        if needs:
            raise Conflict(
                f"the case cannot close as {body.close!r} yet",
                [
                    field_error(("close",), f"missing: {describe_need(need, entries)}")
                    for need in needs
                ],
            )
        case.phase = model.closed.id
        case.status = "closed"
        case.outcome = body.close
        case.closed_on = today
        case.closed_at = now
        case.next_evaluation_due = None
        case.overdue_reasons = []
    else:
        target = model.phase(str(body.to))
        following = model.next_phase(case.phase)
        if (
            target is None
            or following is None
            or target.id != following.id
            or target == model.closed
        ):
            expected = following.id if following and following != model.closed else None
            raise InvalidInput(
                "a case moves to the next phase of its model (or closes with an outcome)",
                [
                    field_error(
                        ("to",),
                        f"the next phase is {expected!r}" if expected else "close the case instead",
                    )
                ],
            )
        needs = missing(model, case, entries, texted)
        if needs:
            raise Conflict(
                f"phase {case.phase!r} cannot be left yet",
                [field_error(("to",), f"missing: {REQUIREMENTS[n]}") for n in needs],
            )
        if previous == model.phases[0].id and model.default_length_days:
            # R.O.S.: the course runs its default length from the end of intake.
            case.planned_end = today + timedelta(days=model.default_length_days)
        case.phase = target.id
        if _clock_from_opening(model) and case.next_evaluation_due is None:
            _schedule(model, case, today)
    case.version += 1
    await repo.add_entry(
        case.id,
        "phase-change",
        {"from": previous, "to": case.phase} | ({"outcome": case.outcome} if case.outcome else {}),
        principal.subject,
        body.reason,
    )
    event = (
        _version_event(
            repo, case, CASE_CLOSED, now, outcome=case.outcome, closed_on=today.isoformat()
        )
        if case.status == "closed"
        else _version_event(
            repo,
            case,
            CASE_PHASE_CHANGED,
            now,
            previous_phase=previous,
            responsible_role=model.phase(case.phase).responsible,  # type: ignore[union-attr]
            planned_end=case.planned_end.isoformat() if case.planned_end else None,
        )
    )
    await repo.publish([event])
    await repo.session.flush()
    return await load(repo, principal, case.id)


# --- from concerns -------------------------------------------------------------------------


async def on_concerns(
    repo: CaseRepository, concerns: Sequence[tuple[ConcernData, str]], now: datetime
) -> int:
    """Opens and updates cases from concern events (type, data), idempotently: a concern is
    attached once; a raised concern of an opening level opens a case when the pupil has none
    open at the school and the concern was never attached to a case (so a replay after the
    case closed opens nothing); a withdrawal marks the attached entry withdrawn."""
    if not concerns:
        return 0
    schools = await repo.schools([d.school_id for d, _ in concerns])
    opened = 0
    for data, event_type in concerns:
        concern_id = uuid.UUID(data.concern_id)
        withdrawn = data.status == "withdrawn"
        if await repo.concern_attached(concern_id):
            # Newer revisions only: a replayed old event never undoes a later withdrawal.
            await repo.set_concern_state(concern_id, withdrawn, data.revision)
            continue
        found = schools.get(data.school_id)
        if found is None or withdrawn:
            continue
        school, municipality = found
        case = await repo.open_case(data.pupil_id, data.school_id)
        if case is None:
            model = await model_for(repo, school, municipality)
            levels = municipality.case_opening_levels or list(model.opening_levels)
            if not event_type.endswith(".raised") or data.level not in levels:
                continue
            case = await _new_case(
                repo, school, municipality, data.pupil_id, "absence-data", "opspor", now
            )
            if case is None:
                continue
            opened += 1
        entry = {
            "level": data.level,
            "pack_id": data.explanation.pack_id,
            "rule_id": data.explanation.rule_id,
            "crossing_date": data.crossing_date.isoformat(),
            "revision": data.revision,
            "withdrawn": False,
        }
        await repo.add_entry(case.id, "concern", entry, "opspor", None, concern_id)
    return opened


# --- clocks --------------------------------------------------------------------------------


def _reasons(case: Case, entries: Sequence[CaseEntry], today: date, *, ppr_must: bool) -> list[str]:
    reasons = []
    if case.next_evaluation_due is not None and case.next_evaluation_due < today:
        reasons.append("evaluation-overdue")
    if case.planned_end is not None and case.planned_end < today:
        reasons.append("planned-end-passed")
    if ppr_must and not _ppr_involved(entries):
        reasons.append("ppr-referral-missing")
    return reasons


def _due_date(reason: str, case: Case) -> date | None:
    if reason == "evaluation-overdue":
        return case.next_evaluation_due
    if reason == "planned-end-passed":
        return case.planned_end
    return None


def _overdue_event(
    repo: CaseRepository, case: Case, phase: Phase, reason: str, day: date, now: datetime
) -> OutboxMessage:
    # One per case, reason and day: the alerter keeps one reminder per id.
    due = _due_date(reason, case)
    return _message(
        repo.topic,
        case,
        CASE_OVERDUE,
        f"{case.id}:overdue:{reason}:{day.isoformat()}",
        now,
        responsible_role=phase.responsible,
        responsible_party=phase.party,
        reason=reason,
        day=day.isoformat(),
        due_date=due.isoformat() if due else None,
    )


async def check_overdue(repo: CaseRepository, now: datetime) -> int:
    """Judges every open case on the school's current day; publishes `case.overdue` when a
    reason first appears and again every REMIND_EVERY while it lasts (the alerter turns each
    into one reminder per case, reason and day). Returns the events published."""
    cases = await repo.open_cases()
    if not cases:
        OVERDUE.clear()
        return 0
    schools = await repo.schools([c.school_id for c in cases])
    ppr_must = await repo.ppr_must_pupils([(c.pupil_id, c.school_id) for c in cases])
    models: dict[str, dict[str, CaseModel]] = {}
    messages: list[OutboxMessage] = []
    for case in cases:
        school, _ = schools[case.school_id]
        today = today_at(school, now)
        entries = await repo.entries(case.id)
        reasons = _reasons(
            case, entries, today, ppr_must=(case.pupil_id, case.school_id) in ppr_must
        )
        reminded = dict(case.reminded)
        if case.municipality_id not in models:
            models[case.municipality_id] = await models_of(repo, case.municipality_id)
        model = models[case.municipality_id][case.model_id]
        phase = model.phase(case.phase)
        assert phase is not None
        for reason in reasons:
            last = reminded.get(reason)
            if last is not None and today - date.fromisoformat(last) < REMIND_EVERY:
                continue
            messages.append(_overdue_event(repo, case, phase, reason, today, now))
            reminded[reason] = today.isoformat()
        reminded = {r: d for r, d in reminded.items() if r in reasons}
        if reasons != list(case.overdue_reasons) or reminded != case.reminded:
            case.overdue_reasons = reasons
            case.reminded = reminded
    await repo.publish(messages)
    counts: dict[tuple[str, str], int] = {}
    for case in cases:
        for reason in case.overdue_reasons:
            key = (case.municipality_id, reason)
            counts[key] = counts.get(key, 0) + 1
    OVERDUE.clear()
    for (municipality_id, reason), n in counts.items():
        OVERDUE.labels(municipality_id, reason).set(n)
    return len(messages)


async def republish(repo: CaseRepository, cases: Sequence[Case], now: datetime) -> int:
    """Publishes the cases' current state again, for the consumers of a cases topic that lost
    data (the database is the record; opspor_api.replay). A closed case gives its closing
    event; an open case gives `case.opened` at its current version, its due evaluation, and
    the overdue event of each current reason for the day it was last published (the alerter's
    reminders). Ids are the originals' where the event can be rebuilt as it was (closing,
    overdue, a case untouched since opening) and otherwise new ones per version, so a
    consumer that holds an event ignores it. Returns the events queued."""
    models: dict[str, dict[str, CaseModel]] = {}
    messages: list[OutboxMessage] = []
    for case in cases:
        if case.status == "closed":
            closed_on = case.closed_on.isoformat() if case.closed_on else None
            messages.append(
                _version_event(
                    repo, case, CASE_CLOSED, now, outcome=case.outcome, closed_on=closed_on
                )
            )
            continue
        messages.append(_version_event(repo, case, CASE_OPENED, now, source=case.source))
        if case.next_evaluation_due is not None:
            due = case.next_evaluation_due.isoformat()
            messages.append(_version_event(repo, case, CASE_EVALUATION_DUE, now, due_date=due))
        reminded = [r for r in case.overdue_reasons if r in case.reminded]
        if not reminded:
            continue
        if case.municipality_id not in models:
            models[case.municipality_id] = await models_of(repo, case.municipality_id)
        phase = models[case.municipality_id][case.model_id].phase(case.phase)
        assert phase is not None  # a case is always in a phase of its model
        for reason in reminded:
            day = date.fromisoformat(case.reminded[reason])
            messages.append(_overdue_event(repo, case, phase, reason, day, now))
    await repo.publish(messages)
    return len(messages)


# --- reads ---------------------------------------------------------------------------------


def visible_cases(principal: Principal) -> ColumnElement[bool]:
    """The cases a principal may list (sees_case as SQL)."""
    if principal.municipality is None:
        return false()
    condition: ColumnElement[bool] = Case.municipality_id == principal.municipality
    if principal.role is Role.SCHOOL_STAFF:
        return and_(condition, Case.school_id.in_(sorted(principal.schools)))
    if principal.role is Role.PPR:
        referred = exists().where(
            CaseEntry.case_id == Case.id,
            CaseEntry.kind == "referral",
            CaseEntry.data["to"].as_string() == "ppr",
        )
        return and_(condition, referred)
    if principal.role is Role.MUNICIPALITY_ADMIN:
        return condition
    return false()


def _page_key(text: str) -> tuple[date, uuid.UUID]:
    day, case_id = text.split("|")
    return date.fromisoformat(day), uuid.UUID(case_id)


async def school_cases(
    repo: CaseRepository,
    principal: Principal,
    school_id: str,
    filters: dict[str, Any],
    cursor: str | None,
    limit: int,
) -> CasePage:
    found = await repo.school(school_id)
    if (
        found is None
        or found[0].municipality_id != principal.municipality
        or (principal.role is Role.SCHOOL_STAFF and school_id not in principal.schools)
    ):
        raise NotFound(f"no school {school_id!r}")
    where = and_(visible_cases(principal), Case.school_id == school_id)
    if filters.get("phase"):
        where = and_(where, Case.phase == filters["phase"])
    if filters.get("status"):
        where = and_(where, Case.status == filters["status"])
    if filters.get("coordinator"):
        where = and_(where, Case.coordinator == filters["coordinator"])
    if filters.get("overdue") is not None:
        has = func.cardinality(Case.overdue_reasons) > 0
        where = and_(where, has if filters["overdue"] else ~has)
    after = decode_cursor(cursor, _page_key) if cursor else None
    rows = await repo.page(where, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    models = await models_of(repo, found[0].municipality_id)
    items = [summary(c, models[c.model_id]) for c in rows]
    next_cursor = (
        encode_cursor(f"{rows[-1].opened_on.isoformat()}|{rows[-1].id}") if more and rows else None
    )
    return CasePage(items=items, next_cursor=next_cursor)


async def pupil_cases(
    repo: CaseRepository, principal: Principal, pupil_id: str
) -> list[CaseSummary]:
    rows = await repo.page(and_(visible_cases(principal), Case.pupil_id == pupil_id), None, 500)
    if not rows:
        raise NotFound(f"no pupil {pupil_id!r}")
    models = await models_of(repo, rows[0].municipality_id)
    return [summary(c, models[c.model_id]) for c in rows]


async def read_case(repo: CaseRepository, principal: Principal, case_id: uuid.UUID) -> CaseOut:
    return await view_of(repo, principal, await load(repo, principal, case_id))


async def view_of(repo: CaseRepository, principal: Principal, loaded: Loaded) -> CaseOut:
    """The case as this reader may see it."""
    if full_text_reader(principal):
        return await case_out(repo, loaded, with_text=True)
    # The municipality sees metadata: the phase history, no free text, no other entries.
    history = [e for e in loaded.entries if e.kind == "phase-change"]
    return await case_out(
        repo, Loaded(loaded.case, loaded.model, loaded.school, history), with_text=False
    )
