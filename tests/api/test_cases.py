"""Cases through HTTP on real PostgreSQL: the three shipped models end to end, the rules of
leaving a phase and of closing, optimistic concurrency, cases opened by concerns, the overdue
clock, and who sees what."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_api.cases import service as cases_service
from opspor_api.cases.repository import CaseRepository
from opspor_api.models import AuditEntry, Case, CaseEntry, CaseText, api_purges
from opspor_api.purge import purge_once
from opspor_api.settings import ApiSettings
from opspor_shared.auth import Role
from opspor_shared.casemodels import CaseModelError, parse_model
from opspor_shared.events import CloudEvent, ConcernData
from tests.api.test_concerns import concern_event
from tests.auth import bearer
from tests.support import configure, read_records, read_topic, run_module

STAFF = bearer(Role.SCHOOL_STAFF, "aalborg", ["vestbjerg"], subject="lærer-1")
OTHER_STAFF = bearer(Role.SCHOOL_STAFF, "aalborg", ["hals"], subject="lærer-2")
PPR = bearer(Role.PPR, "aalborg", subject="ppr-1")
ADMIN = bearer(Role.MUNICIPALITY_ADMIN, "aalborg", subject="admin-1")
PUPIL = "elev-4711"
MUNICIPALITY = {
    "name": "Aalborg Kommune",
    "country": "DK",
    "language": "da",
    "rule_packs": ["dk-aalborg-2018"],
    "ppr_mailbox": "ppr@sikkerpost.aalborg.dk",
}


async def use_model(client: httpx.AsyncClient, model: str) -> None:
    await configure(client)
    r = await client.put("/v1/municipalities/aalborg", json=MUNICIPALITY | {"case_model": model})
    assert r.status_code == 200, r.text


async def open_case(client: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    body = {"pupil_id": PUPIL, "source": "parents"} | extra
    r = await client.post("/v1/schools/vestbjerg/cases", json=body, headers=STAFF)
    assert r.status_code == 201, r.text
    return r


class Worker:
    """A member of staff working one case, sending the ETag they last read."""

    def __init__(self, client: httpx.AsyncClient, first: httpx.Response) -> None:
        self.client = client
        self.id = first.json()["id"]
        self.etag = first.headers["etag"]

    async def _post(self, path: str, body: dict[str, Any], expect: int) -> httpx.Response:
        r = await self.client.post(
            f"/v1/cases/{self.id}/{path}", json=body, headers=STAFF | {"If-Match": self.etag}
        )
        assert r.status_code == expect, r.text
        if r.is_success:
            self.etag = r.headers["etag"]
        return r

    async def record(self, body: dict[str, Any], expect: int = 201) -> httpx.Response:
        return await self._post("entries", body, expect)

    async def move(self, to: str, expect: int = 200) -> httpx.Response:
        return await self._post("transitions", {"to": to}, expect)

    async def close(self, outcome: str, expect: int = 200) -> httpx.Response:
        return await self._post("transitions", {"close": outcome}, expect)


def missing(r: httpx.Response) -> list[str]:
    assert r.headers["content-type"] == "application/problem+json"
    return [e["detail"] for e in r.json()["errors"]]


def bad_fields(r: httpx.Response) -> set[str]:
    assert r.headers["content-type"] == "application/problem+json"
    return {e["field"] for e in r.json()["errors"]}


async def unchanged(client: httpx.AsyncClient, w: Worker, version: int, entries: int) -> None:
    """Nothing was stored: the case is at the version and has the entries it had."""
    case = (await client.get(f"/v1/cases/{w.id}", headers=STAFF)).json()
    assert (case["version"], len(case["entries"])) == (version, entries)


# The schools' "today" (Copenhagen and Oslo share a date): the service judges dates in the
# school's time zone, so the machine's UTC date would be a day behind between 23:00 and 24:00.
TODAY = datetime.now(ZoneInfo("Europe/Copenhagen")).date()
SUPPORT_PLAN = (
    "an action plan with the pupil and the parents: the support in class and how they take "
    "part, how long it runs, when it is followed up"
)
# The ladder's plan in full (seed 001): with pupil and home, how long, when it is followed up,
# and what it is in its text.
LADDER_PLAN = {
    "kind": "action-plan",
    "with": ["pupil", "parents", "school"],
    "until": (TODAY + timedelta(days=42)).isoformat(),
    "follow_up": (TODAY + timedelta(days=14)).isoformat(),
    "note": "Fast voksen i klassen i 1. lektion; eleven og forældrene er med til opfølgningen",
}


async def test_the_shipped_models_are_served_with_their_phases(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/case-models", headers=STAFF)
    assert [m["id"] for m in r.json()] == ["baerum", "dk-ladder", "ros-herning"]
    ros = (await client.get("/v1/case-models/ros-herning", headers=STAFF)).json()
    assert [p["id"] for p in ros["phases"]] == [
        "intake", "preparatory", "relational", "investigative", "handover", "closed",
    ]  # fmt: skip
    assert ros["phases"][1]["requires"] == ["meeting", "action-plan", "goal"]
    assert ros["default_length_days"] == 92
    assert {i["code"] for i in ros["interventions"]} >= {"gradual-exposure", "practical-help"}
    assert ros["phases"][0]["name"] == {"da": "Visitation", "nb": "Inntak", "en": "Intake"}
    assert ros["name"]["en"] == "R.O.S. (Herning)"
    baerum = (await client.get("/v1/case-models/baerum", headers=STAFF)).json()
    assert (baerum["evaluation_days"], baerum["evaluation_from"]) == (21, "plan")
    assert (await client.get("/v1/case-models/nope", headers=STAFF)).status_code == 404


def test_a_model_document_names_every_mistake_by_its_place() -> None:
    document = {
        "id": "Lokal Model",
        "version": "1",
        "source": "test",
        "name": {"da": "x", "nb": "x", "en": "x", "fr": "x"},
        "outcomes": ["back-in-class"],
        "evaluation_days": 1000,
        "evaluation_from": "tuesday",
        "interventions": [
            {"code": "mentor", "name": {"da": "Mentor", "nb": "Mentor", "en": "Mentor"}},
            {"code": "walk", "name": {"da": "Gå", "nb": "Gå", "en": "Walk"}, "da": "Gå"},
        ],
        "phases": [
            {"id": "start", "name": {"da": "a", "nb": "a", "en": "a"}, "responsible": "teacher",
             "requires": ["goal", "magic"]},
            {"id": "start", "name": {"da": "b\r\nBcc:", "nb": "b", "en": "b"},
             "responsible": "school-leader", "requires": []},
        ],
    }  # fmt: skip
    with pytest.raises(CaseModelError) as caught:
        parse_model(document)
    assert {where for where, _ in caught.value.problems} == {
        "id",
        "name.fr",
        "evaluation_days",
        "evaluation_from",
        "interventions[1].da",
        "phases[0].responsible",
        "phases[0].requires[1]",
        "phases[1].id",
        "phases[1].name.da",
    }


OWN_MODEL: dict[str, Any] = {
    "version": "1",
    "source": "Aalborg ressourceteam 2026",
    "name": {"da": "Aalborg-modellen", "nb": "Aalborg-modellen", "en": "Aalborg model"},
    "evaluation_days": 10,
    "outcomes": ["back-in-class", "moved-away"],
    "interventions": [{"code": "mentor", "da": "Mentor", "nb": "Mentor", "en": "Mentor"}],
    "phases": [
        {"id": "team", "name": {"da": "Team", "nb": "Team", "en": "Team"},
         "responsible": "class-team", "requires": ["contact", "intervention"]},
        {"id": "done", "name": {"da": "Slut", "nb": "Slutt", "en": "Done"},
         "responsible": "school-leader", "requires": []},
    ],
}  # fmt: skip


async def test_a_municipality_stores_its_own_model_and_its_cases_follow_it(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    path = "/v1/municipalities/aalborg/case-models/aalborg-team"
    bad = OWN_MODEL | {
        "phases": [OWN_MODEL["phases"][0] | {"requires": ["contact", "luck"], "responsible": "x"}]
    }
    r = await client.put(path, json=bad, headers=ADMIN)
    assert r.status_code == 422
    # One phase is too few, and being the last it would be the closed phase, which requires
    # nothing: every mistake is named at once.
    assert {e["field"] for e in r.json()["errors"]} == {
        "phases",
        "phases[0].responsible",
        "phases[0].requires[1]",
        "phases[0].requires",
    }
    shipped = await client.put(
        "/v1/municipalities/aalborg/case-models/baerum", json=OWN_MODEL, headers=ADMIN
    )
    assert shipped.status_code == 409
    assert (await client.put(path, json=OWN_MODEL, headers=ADMIN)).status_code == 201
    assert (await client.put(path, json=OWN_MODEL, headers=ADMIN)).status_code == 200
    changed = await client.put(path, json=OWN_MODEL | {"evaluation_days": 5}, headers=ADMIN)
    assert changed.status_code == 409
    listed = await client.get("/v1/municipalities/aalborg/case-models", headers=ADMIN)
    assert "aalborg-team" in [m["id"] for m in listed.json()]
    # A shipped model, as served, stored back under an id of the municipality's own.
    served = (await client.get("/v1/case-models/baerum", headers=ADMIN)).json()
    copy = await client.put(
        "/v1/municipalities/aalborg/case-models/baerum-aalborg",
        json=served | {"id": "baerum-aalborg", "evaluation_days": 14},
        headers=ADMIN,
    )
    assert copy.status_code == 201, copy.text
    stored = copy.json()
    assert (stored["name"], stored["interventions"], stored["phases"]) == (
        served["name"],
        served["interventions"],
        served["phases"],
    )
    assert stored["evaluation_from"] == "plan"
    assert stored["evaluation_days"] == 14
    # Another municipality neither sees nor can pick it.
    odense = bearer(Role.MUNICIPALITY_ADMIN, "odense")
    assert (
        await client.get("/v1/municipalities/aalborg/case-models", headers=odense)
    ).status_code == 404
    unknown = await client.put(
        "/v1/municipalities/aalborg", json=MUNICIPALITY | {"case_model": "nope"}
    )
    assert [e["field"] for e in unknown.json()["errors"]] == ["case_model"]
    r = await client.put(
        "/v1/municipalities/aalborg", json=MUNICIPALITY | {"case_model": "aalborg-team"}
    )
    assert r.status_code == 200, r.text
    w = Worker(client, await open_case(client))
    assert missing(await w.close("back-in-class", 409)) == [
        "missing: a contact with the home that reached someone, with its outcome",
        "missing: at least one intervention",
        "missing: an evaluation that found the problem resolved",
    ]
    await w.record(
        {"kind": "intervention", "type": "mentor", "owner": "x", "start": TODAY.isoformat()}
    )
    await w.record(
        {
            "kind": "contact",
            "form": "call",
            "with": ["parents"],
            "on": TODAY.isoformat(),
            "reached": True,
            "outcome": "Mor kommer til møde",
        }
    )
    await w.record({"kind": "evaluation", "done": TODAY.isoformat(), "result": "resolved"})
    assert (await w.close("back-in-class")).json()["model_id"] == "aalborg-team"


async def test_a_ladder_case_climbs_to_external_help_and_back_to_class(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "dk-ladder")
    w = Worker(client, await open_case(client))
    await w.move("resource-team")
    # The 14-day follow-up the case opened with is the model's, not one the team agreed.
    assert (await client.get(f"/v1/cases/{w.id}", headers=STAFF)).json()["next_evaluation_due"] == (
        TODAY + timedelta(days=14)
    ).isoformat()
    assert missing(await w.move("plan", 409)) == [
        "missing: sparring given by the resource team",
        "missing: a follow-up date agreed",
    ]
    await w.record(
        {"kind": "contact", "form": "sparring", "with": ["resource-team"], "on": TODAY.isoformat(),
         "reached": True}
    )  # fmt: skip
    agreed = TODAY + timedelta(days=10)
    followed = await w.record({"kind": "evaluation", "due": agreed.isoformat()})
    assert followed.json()["next_evaluation_due"] == agreed.isoformat()
    await w.move("plan")
    assert missing(await w.move("external", 409)) == [
        f"missing: {SUPPORT_PLAN}",
        "missing: at least one intervention",
        "missing: a named coordinator (tovholder)",
    ]
    await w.record(LADDER_PLAN)
    await w.record(
        {"kind": "intervention", "type": "support-in-class", "owner": "laerer",
         "start": TODAY.isoformat()}
    )  # fmt: skip
    await w.record({"kind": "assignment", "coordinator": "tovholder-1"})
    await w.move("external")
    await w.record(
        {"kind": "referral", "to": "child-psychiatry", "type": "referred", "on": TODAY.isoformat()}
    )
    await w.record({"kind": "evaluation", "done": TODAY.isoformat(), "result": "resolved"})
    closed = (await w.close("back-in-class")).json()
    assert [e["data"]["to"] for e in closed["entries"] if e["kind"] == "phase-change"] == [
        "class-team", "resource-team", "plan", "external", "closed",
    ]  # fmt: skip


async def test_a_ros_case_from_intake_to_handover(client: httpx.AsyncClient) -> None:
    await use_model(client, "ros-herning")
    first = await open_case(client, note="Mor ringede bekymret")
    case = first.json()
    assert (case["model_id"], case["phase"], case["responsible_role"]) == (
        "ros-herning",
        "intake",
        "school-leader",
    )
    w = Worker(client, first)
    # Intake cannot be left without an eligibility decision.
    assert missing(await w.move("preparatory", 409)) == [
        "missing: an eligibility decision (eligible)"
    ]
    await w.record({"kind": "eligibility", "eligible": True, "basis": "limit-crossed"})
    moved = (await w.move("preparatory")).json()
    assert moved["planned_end"] == (TODAY + timedelta(days=92)).isoformat()
    # Preparatory needs a meeting, an action plan and at least one goal: all named at once.
    assert missing(await w.move("relational", 409)) == [
        "missing: a meeting held with the pupil and the family",
        "missing: an action plan",
        "missing: at least one concrete goal",
    ]
    await w.record(
        {"kind": "contact", "form": "meeting", "with": ["pupil", "parents", "school"],
         "on": TODAY.isoformat(), "reached": True, "outcome": "Aftale om handleplan"}
    )  # fmt: skip
    await w.record({"kind": "action-plan", "with": ["pupil", "parents", "school", "ros"]})
    goal = await w.record({"kind": "goal", "text": "I skole 3 dage om ugen", "due": "2027-01-15"})
    goal_id = goal.json()["entries"][-1]["id"]
    await w.move("relational")
    await w.record(
        {"kind": "intervention", "type": "practical-help", "owner": "ros-laerer",
         "start": TODAY.isoformat()}
    )  # fmt: skip
    await w.record(
        {"kind": "contact", "form": "call", "with": ["pupil", "parents"], "on": TODAY.isoformat(),
         "reached": True, "outcome": "Kommer i skole torsdag"}
    )  # fmt: skip
    await w.move("investigative")
    assert missing(await w.move("handover", 409)) == [
        "missing: causes mapped in the cause circle",
        "missing: every goal followed up (achieved, partly achieved or not achieved)",
    ]
    await w.record({"kind": "cause", "category": "social", "note": "Savner venner"})
    await w.record(
        {"kind": "goal", "text": "opfølgning", "goal_entry": goal_id, "status": "achieved"}
    )
    await w.move("handover")
    # An outcome outside the model is refused; handing over needs the agreement sheets.
    assert (await w.close("back-to-everyday-life", 422)).json()["errors"][0]["field"] == "close"
    assert missing(await w.close("handed-over", 409)) == [
        "missing: an agreement sheet with the pupil, the family and the school"
    ]
    await w.record({"kind": "agreement", "with": ["pupil", "parents", "school"]})
    closed = (await w.close("handed-over")).json()
    assert (closed["status"], closed["phase"], closed["outcome"]) == (
        "closed",
        "closed",
        "handed-over",
    )
    history = [
        (e["data"]["from"], e["data"]["to"])
        for e in closed["entries"]
        if e["kind"] == "phase-change"
    ]
    assert history == [
        (None, "intake"), ("intake", "preparatory"), ("preparatory", "relational"),
        ("relational", "investigative"), ("investigative", "handover"), ("handover", "closed"),
    ]  # fmt: skip
    # A closed case takes no more entries; a new worry opens a new case.
    await w.record({"kind": "cause", "category": "school"}, 409)
    second = await open_case(client)
    assert second.json()["id"] != closed["id"]


async def test_ros_not_eligible_is_a_recorded_decision_never_a_silent_drop(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "ros-herning")
    w = Worker(client, await open_case(client))
    assert missing(await w.close("not-eligible", 409)) == [
        "missing: an eligibility decision of not eligible, with its reason"
    ]
    bad = await w.record({"kind": "eligibility", "eligible": False, "exclusions": ["bored"]}, 422)
    assert bad.json()["errors"][0]["field"] == "exclusions[0]"
    await w.record(
        {"kind": "eligibility", "eligible": False, "exclusions": ["child-welfare-investigation"],
         "note": "Børnefaglig undersøgelse i gang"}
    )  # fmt: skip
    closed = (await w.close("not-eligible")).json()
    decision = next(e for e in closed["entries"] if e["kind"] == "eligibility")
    assert decision["data"]["exclusions"] == ["child-welfare-investigation"]
    assert decision["text"] == "Børnefaglig undersøgelse i gang"


async def test_an_eligibility_decision_says_why_or_is_refused_whole(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "ros-herning")
    w = Worker(client, await open_case(client))
    # Each refusal names every bad field at once and stores nothing.
    silent = await w.record({"kind": "eligibility", "eligible": False}, 422)
    assert bad_fields(silent) == {"exclusions", "note"}
    contradiction = await w.record(
        {"kind": "eligibility", "eligible": True, "exclusions": ["substance-abuse"]}, 422
    )
    assert bad_fields(contradiction) == {"exclusions", "basis"}
    unexplained = await w.record(
        {"kind": "eligibility", "eligible": True, "basis": "staff-judgement", "note": " \n"}, 422
    )
    assert missing(unexplained) == ["a staff judgement needs its reason in the note"]
    await unchanged(client, w, 1, 1)
    assert missing(await w.close("not-eligible", 409)) == [
        "missing: an eligibility decision of not eligible, with its reason"
    ]
    # A staff reason without an exclusion from the model's list: the note is the reason.
    await w.record(
        {"kind": "eligibility", "eligible": False, "note": "Eleven er i dagbehandling hver dag"}
    )
    closed = (await w.close("not-eligible")).json()
    decision = next(e for e in closed["entries"] if e["kind"] == "eligibility")
    assert decision["data"] == {"eligible": False, "exclusions": []}
    assert decision["text"] == "Eleven er i dagbehandling hver dag"
    # Eligible as a staff judgement below the limits, with its reason.
    again = Worker(client, await open_case(client))
    await again.record(
        {"kind": "eligibility", "eligible": True, "basis": "staff-judgement",
         "note": "Bekymrende fravær under 60-dages-grænsen"}
    )  # fmt: skip
    assert (await again.move("preparatory")).json()["phase"] == "preparatory"


async def test_a_model_without_exclusions_takes_a_not_eligible_decision_with_a_note(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "baerum")
    w = Worker(client, await open_case(client))
    r = await w.record({"kind": "eligibility", "eligible": False}, 422)
    assert missing(r) == ["a not-eligible decision needs its reason in the note"]
    r = await w.record(
        {"kind": "eligibility", "eligible": False, "exclusions": ["substance-abuse"]}, 422
    )
    assert bad_fields(r) == {"exclusions[0]", "note"}
    await unchanged(client, w, 1, 1)
    await w.record({"kind": "eligibility", "eligible": False, "note": "Går på privatskole"})


async def test_ros_meeting_and_agreement_count_only_with_pupil_family_and_school(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "ros-herning")
    w = Worker(client, await open_case(client))
    await w.record({"kind": "eligibility", "eligible": True, "basis": "limit-crossed"})
    await w.move("preparatory")
    await w.record({"kind": "action-plan", "with": ["pupil", "parents", "school", "ros"]})
    goal = (await w.record({"kind": "goal", "text": "Møde op mandag"})).json()["entries"][-1]
    day = TODAY.isoformat()
    # Not the meeting R.O.S. asks for: the family missing, the pupil missing, nobody came.
    for with_, reached in (
        (["pupil", "school"], True),
        (["parents", "school"], True),
        (["pupil", "parents", "school"], False),
    ):
        await w.record(
            {"kind": "contact", "form": "meeting", "with": with_, "on": day, "reached": reached}
        )
    # A call with all of them is no meeting either.
    await w.record(
        {"kind": "contact", "form": "call", "with": ["pupil", "parents"], "on": day,
         "reached": True, "outcome": "Aftalt møde"}
    )  # fmt: skip
    assert missing(await w.move("relational", 409)) == [
        "missing: a meeting held with the pupil and the family"
    ]
    await w.record(
        {"kind": "contact", "form": "meeting", "with": ["pupil", "parents", "school"], "on": day,
         "reached": True}
    )  # fmt: skip
    await w.move("relational")
    await w.move("investigative")  # the call home above is the relational phase's contact
    await w.record({"kind": "cause", "category": "school"})
    await w.record(
        {
            "kind": "goal",
            "text": "opfølgning",
            "goal_entry": goal["id"],
            "status": "partly-achieved",
        }
    )
    await w.move("handover")
    # Agreement sheets with the pupil and the family but not the school are not the handover's.
    await w.record({"kind": "agreement", "with": ["pupil", "parents", "ros"]})
    assert missing(await w.close("handed-over", 409)) == [
        "missing: an agreement sheet with the pupil, the family and the school"
    ]
    await w.record({"kind": "agreement", "with": ["pupil", "parents", "school"]})
    assert (await w.close("handed-over")).json()["outcome"] == "handed-over"


async def test_the_baerum_call_home_reaches_the_parents_and_has_its_outcome(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "baerum")
    w = Worker(client, await open_case(client))
    day = TODAY.isoformat()
    call_home = "missing: a contact with the home that reached someone, with its outcome"
    for contact in (
        # Sparring with the resource team is no call home, whatever came of it.
        {"form": "sparring", "with": ["resource-team"], "reached": True, "outcome": "Drøftet"},
        {"form": "call", "with": ["pupil"], "reached": True, "outcome": "Eleven var syg"},
        {"form": "call", "with": ["parents"], "reached": False, "outcome": "Intet svar"},
        {"form": "call", "with": ["parents"], "reached": True},
        {"form": "call", "with": ["parents"], "reached": True, "outcome": "  "},
    ):
        await w.record({"kind": "contact", "on": day} | contact)
    assert missing(await w.move("mapping", 409)) == [call_home]
    assert missing(await w.close("no-concern-after-contact", 409)) == [call_home]
    await w.record(
        {"kind": "contact", "form": "call", "with": ["parents"], "on": day, "reached": True,
         "outcome": "Far bekymret; eleven vil ikke i skole"}
    )  # fmt: skip
    await w.move("mapping")
    # Mapping's meeting is with the pupil and the parents.
    await w.record(
        {"kind": "contact", "form": "meeting", "with": ["parents", "school"], "on": day,
         "reached": True}
    )  # fmt: skip
    assert "missing: a meeting held with the pupil and the family" in missing(
        await w.move("further-measures", 409)
    )
    await w.record(
        {"kind": "contact", "form": "meeting", "with": ["pupil", "parents"], "on": day,
         "reached": True}
    )  # fmt: skip
    assert "missing: a meeting held with the pupil and the family" not in missing(
        await w.move("further-measures", 409)
    )
    # The call home that found the worry also lets a case close as no concern after contact.
    closed = (await w.close("no-concern-after-contact")).json()
    assert closed["outcome"] == "no-concern-after-contact"


async def test_a_ladder_plan_is_whole_or_refused_and_sets_the_follow_up(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "dk-ladder")
    w = Worker(client, await open_case(client))
    await w.move("resource-team")
    await w.record(
        {"kind": "contact", "form": "sparring", "with": ["resource-team"], "on": TODAY.isoformat(),
         "reached": True}
    )  # fmt: skip
    await w.record({"kind": "evaluation", "due": (TODAY + timedelta(days=7)).isoformat()})
    moved = (await w.move("plan")).json()
    r = await w.record({"kind": "action-plan", "with": ["school"], "note": " "}, 422)
    assert bad_fields(r) == {"with", "until", "follow_up", "note"}
    await unchanged(client, w, moved["version"], len(moved["entries"]))
    planned = (await w.record(LADDER_PLAN)).json()
    # "The follow-up date of each plan" is the ladder's clock.
    assert planned["next_evaluation_due"] == LADDER_PLAN["follow_up"]
    plan = planned["entries"][-1]
    assert plan["data"] == {
        "with": ["pupil", "parents", "school"],
        "until": LADDER_PLAN["until"],
        "follow_up": LADDER_PLAN["follow_up"],
    }
    assert missing(await w.move("external", 409)) == [
        "missing: at least one intervention",
        "missing: a named coordinator (tovholder)",
    ]
    # An agreement is no plan, and a model that does not ask for the plan's parts takes an
    # action plan without them (R.O.S. above).
    await w.record({"kind": "agreement", "with": ["parents"]})


async def test_closing_without_contact_needs_three_failed_days_and_a_leader(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "dk-ladder")
    w = Worker(client, await open_case(client))
    for day in (TODAY, TODAY, TODAY - timedelta(days=1)):  # two different days
        await w.record(
            {"kind": "contact", "form": "call", "with": ["parents"], "on": day.isoformat(),
             "reached": False}
        )  # fmt: skip
    assert missing(await w.close("no-contact", 409)) == [
        "missing: failed contact attempts on 3 different days (2 recorded)",
        "missing: a leader's approval of closing without contact",
    ]
    await w.record(
        {"kind": "contact", "form": "home-visit", "with": ["parents"],
         "on": (TODAY - timedelta(days=2)).isoformat(), "reached": False}
    )  # fmt: skip
    assert missing(await w.close("no-contact", 409)) == [
        "missing: a leader's approval of closing without contact"
    ]
    await w.record({"kind": "approval", "of": "no-contact", "leader": "skoleleder"})
    assert (await w.close("no-contact")).json()["outcome"] == "no-contact"


async def test_a_baerum_case_loops_through_new_three_week_plans(client: httpx.AsyncClient) -> None:
    await use_model(client, "baerum")
    first = await open_case(client)
    assert first.json()["next_evaluation_due"] is None  # no plan yet, no clock
    w = Worker(client, first)
    await w.record(
        {"kind": "contact", "form": "call", "with": ["parents"], "on": TODAY.isoformat(),
         "reached": True, "outcome": "Bekymring bekreftet"}
    )  # fmt: skip
    await w.move("mapping")
    # The first plan starts the clock: evaluation three weeks after it.
    plan = await w.record({"kind": "action-plan", "with": ["pupil", "parents"], "note": "Plan"})
    assert plan.json()["next_evaluation_due"] == (TODAY + timedelta(days=21)).isoformat()
    for when in (TODAY + timedelta(days=21), TODAY + timedelta(days=42)):
        r = await w.record({"kind": "evaluation", "done": when.isoformat(), "result": "new-plan"})
        assert r.json()["phase"] == "mapping"
        assert r.json()["next_evaluation_due"] == (when + timedelta(days=21)).isoformat()
    assert missing(await w.move("further-measures", 409)) == [
        "missing: a named leader responsible for the case",
        "missing: a meeting held with the pupil and the family",
        "missing: causes mapped in the cause circle",
        "missing: a cooperation agreement",
        "missing: an evaluation that decided on further measures",
    ]
    await w.record({"kind": "assignment", "leader": "avdelingsleder", "coordinator": "kontakt"})
    await w.record(
        {"kind": "contact", "form": "meeting", "with": ["pupil", "parents"],
         "on": TODAY.isoformat(), "reached": True}
    )  # fmt: skip
    await w.record({"kind": "cause", "category": "family"})
    await w.record({"kind": "cause", "category": "school"})
    await w.record({"kind": "agreement", "with": ["pupil", "parents", "school"]})
    later = TODAY + timedelta(days=63)
    await w.record({"kind": "evaluation", "done": later.isoformat(), "result": "escalate"})
    moved = (await w.move("further-measures")).json()
    assert moved["coordinator"] == "kontakt"
    await w.record({"kind": "referral", "to": "ppr", "type": "referred", "on": later.isoformat()})
    assert missing(await w.close("back-to-everyday-life", 409)) == [
        "missing: an evaluation that found the problem resolved"
    ]
    await w.record({"kind": "evaluation", "done": later.isoformat(), "result": "resolved"})
    assert (await w.close("back-to-everyday-life")).json()["status"] == "closed"


async def test_two_people_editing_one_case_never_overwrite_each_other(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "dk-ladder")
    first = await open_case(client)
    anna, bo = Worker(client, first), Worker(client, first)
    await anna.record({"kind": "cause", "category": "social", "note": "Annas notat"})
    stale = await bo.record({"kind": "cause", "category": "family", "note": "Bos notat"}, 412)
    assert stale.json()["status"] == 412
    r = await client.post(
        f"/v1/cases/{anna.id}/entries", json={"kind": "cause", "category": "school"}, headers=STAFF
    )
    assert r.status_code == 428, r.text
    # Bo reads again and repeats: both notes are there, nothing was lost.
    fresh = await client.get(f"/v1/cases/{bo.id}", headers=STAFF)
    bo.etag = fresh.headers["etag"]
    await bo.record({"kind": "cause", "category": "family", "note": "Bos notat"})
    notes = [
        e["text"]
        for e in (await client.get(f"/v1/cases/{bo.id}", headers=STAFF)).json()["entries"]
        if e["kind"] == "cause"
    ]
    assert notes == ["Annas notat", "Bos notat"]


async def test_bad_entries_are_named_and_store_nothing(client: httpx.AsyncClient) -> None:
    await use_model(client, "ros-herning")
    w = Worker(client, await open_case(client))
    r = await w.record(
        {"kind": "intervention", "type": "magic", "owner": "x", "start": "2026-11-02",
         "end": "2026-11-01"},
        422,
    )  # fmt: skip
    assert {e["field"] for e in r.json()["errors"]} == {"type", "end"}
    r = await w.record(
        {"kind": "cause", "category": "social", "note": "cpr 010203-1234 nævnt"}, 422
    )
    assert "010203" not in r.text
    r = await w.record({"kind": "contact", "form": "call", "with": [], "reached": True}, 422)
    assert {e["field"] for e in r.json()["errors"]} == {"with", "on"}
    # An evaluation held without its result would stop the clock with nothing decided.
    r = await w.record({"kind": "evaluation", "done": TODAY.isoformat()}, 422)
    assert {e["field"] for e in r.json()["errors"]} == {"result"}
    case = (await client.get(f"/v1/cases/{w.id}", headers=STAFF)).json()
    assert [e["kind"] for e in case["entries"]] == ["phase-change"]
    assert case["version"] == 1


async def test_who_sees_which_case_and_its_free_text(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await use_model(client, "baerum")
    w = Worker(client, await open_case(client, note="Fortroligt"))
    path = f"/v1/cases/{w.id}"
    # PPR sees a case only once it was referred or brought for consultation to PPR.
    assert (await client.get(path, headers=PPR)).status_code == 404
    assert (await client.get(path, headers=OTHER_STAFF)).status_code == 404
    await w.record({"kind": "referral", "to": "ppr", "type": "consulted", "on": TODAY.isoformat()})
    ppr = (await client.get(path, headers=PPR)).json()
    assert "Fortroligt" in [e["text"] for e in ppr["entries"]]
    # The municipality sees the metadata and the phase history, never the free text.
    admin = await client.get(path, headers=ADMIN)
    assert admin.status_code == 200
    assert "Fortroligt" not in admin.text
    assert {e["kind"] for e in admin.json()["entries"]} == {"phase-change"}
    listed = (await client.get("/v1/schools/vestbjerg/cases", headers=ADMIN)).json()
    assert [c["id"] for c in listed["items"]] == [w.id]
    assert (await client.get("/v1/pupils/elev-4711/cases", headers=PPR)).status_code == 200
    # Every read of the case was audited, the text reads among them.
    async with sessionmaker() as session:
        reads = await session.scalar(
            select(func.count()).where(
                AuditEntry.pupil_id == PUPIL, AuditEntry.endpoint == "/v1/cases/{case_id}"
            )
        )
    assert reads == 2  # PPR and the administrator; the refused reads stored nothing


async def test_a_school_lists_its_cases_by_phase_and_overdue_state(
    client: httpx.AsyncClient,
) -> None:
    await use_model(client, "dk-ladder")
    for pupil in ("p1", "p2", "p3"):
        r = await client.post(
            "/v1/schools/vestbjerg/cases",
            json={"pupil_id": pupil, "source": "team"},
            headers=STAFF,
        )
        assert r.status_code == 201
    w = Worker(client, r)
    await w.move("resource-team")
    page = (await client.get("/v1/schools/vestbjerg/cases?limit=2", headers=STAFF)).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = await client.get(
        f"/v1/schools/vestbjerg/cases?limit=2&cursor={page['next_cursor']}", headers=STAFF
    )
    assert len(rest.json()["items"]) == 1
    team = (
        await client.get("/v1/schools/vestbjerg/cases?phase=resource-team", headers=STAFF)
    ).json()
    assert [c["pupil_id"] for c in team["items"]] == ["p3"]
    overdue = await client.get("/v1/schools/vestbjerg/cases?overdue=true", headers=STAFF)
    assert overdue.json()["items"] == []
    dup = await client.post(
        "/v1/schools/vestbjerg/cases", json={"pupil_id": "p1", "source": "team"}, headers=STAFF
    )
    assert dup.status_code == 409


def concern_data(event: CloudEvent) -> tuple[ConcernData, str]:
    return ConcernData.model_validate(event.data), event.type


async def test_concerns_open_and_follow_a_case_and_a_replay_changes_nothing(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
    topic_suffix: str,
) -> None:
    topic = f"absence.cases.v1.{topic_suffix}"
    await use_model(client, "dk-ladder")
    now = datetime.now(UTC)
    day = date(2026, 11, 20)
    raised = concern_event(PUPIL, day)
    ppr_may = concern_event(PUPIL, day, level="ppr-may")
    warn = concern_event("elev-2", day, level="ppr-may")  # not an opening level
    events = [raised, ppr_may, warn]

    async def feed(batch: list[CloudEvent]) -> int:
        async with sessionmaker() as session, session.begin():
            repo = CaseRepository(session, topic)
            return await cases_service.on_concerns(repo, [concern_data(e) for e in batch], now)

    async def snapshot() -> list[tuple[Any, ...]]:
        async with sessionmaker() as session:
            cases = [(c.pupil_id, c.status, c.version) for c in await session.scalars(select(Case))]
            entries = [
                (e.kind, e.concern_id, e.data.get("withdrawn"))
                for e in await session.scalars(select(CaseEntry).order_by(CaseEntry.id))
            ]
        return sorted(cases) + entries

    assert await feed(events) == 1
    opened = await snapshot()
    assert opened[:1] == [(PUPIL, "open", 1)]
    assert [k for k, _, _ in opened[1:] if k == "concern"] == ["concern", "concern"]
    assert await feed(events) == 0  # the topic replayed from the start
    assert await snapshot() == opened
    # Withdrawn: the concern stays attached, marked withdrawn; an old event never undoes it.
    withdrawn = concern_event(PUPIL, day, revision=2)
    await feed([withdrawn, raised])
    marks = [w for k, c, w in (await snapshot())[1:] if c == uuid.UUID(raised.data["concern_id"])]
    assert marks == [True]
    # After the case is closed, replaying its concerns opens no new case.
    async with sessionmaker() as session, session.begin():
        case = await session.scalar(select(Case))
        assert case is not None
        case.status = "closed"
    assert await feed(events) == 0
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Case)) == 1
    # Published by the api's relay: opened, and the ladder's first follow-up date.
    published = [CloudEvent.from_bytes(v) for _, v in await read_topic(settings, topic, 2)]
    assert [e.type for e in published] == [
        "dk.absence.case.opened",
        "dk.absence.case.evaluation-due",
    ]
    assert all("text" not in e.data and "note" not in e.data for e in published)


async def test_an_overdue_case_is_published_once_a_week_per_reason(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
    topic_suffix: str,
) -> None:
    topic = f"absence.cases.v1.{topic_suffix}"
    published: list[CloudEvent] = []
    await use_model(client, "baerum")
    w = Worker(client, await open_case(client))
    # Bærum evaluates "3 weeks after each plan": no clock until the cooperation agreement.
    assert (await client.get(f"/v1/cases/{w.id}", headers=STAFF)).json()[
        "next_evaluation_due"
    ] is None
    agreed = await w.record({"kind": "agreement", "with": ["pupil", "parents", "school"]})
    due = TODAY + timedelta(days=21)
    assert agreed.json()["next_evaluation_due"] == due.isoformat()

    async def check(day: date) -> list[CloudEvent]:
        """The overdue events the check on `day` published (read back from the broker)."""
        now = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=10)
        async with sessionmaker() as session, session.begin():
            count = await cases_service.check_overdue(CaseRepository(session, topic), now)
        if count:
            every = await read_topic(settings, topic, len(published) + count)
            published[:] = [CloudEvent.from_bytes(v) for _, v in every]
        return published[len(published) - count :] if count else []

    assert await check(due) == []  # due today is not overdue yet
    [event] = await check(due + timedelta(days=1))
    assert event.type == "dk.absence.case.overdue"
    assert event.id == f"{w.id}:overdue:evaluation-overdue:{(due + timedelta(days=1)).isoformat()}"
    assert event.subject == w.id
    assert event.data | {"version": 0} == {
        "case_id": w.id,
        "pupil_id": PUPIL,
        "school_id": "vestbjerg",
        "municipality_id": "aalborg",
        "model_id": "baerum",
        "phase": "identification",
        "status": "open",
        "opened_on": TODAY.isoformat(),
        "version": 0,
        "responsible_role": "contact-teacher",
        "responsible_party": "school",
        "reason": "evaluation-overdue",
        "day": (due + timedelta(days=1)).isoformat(),
        "due_date": due.isoformat(),
    }
    assert await check(due + timedelta(days=2)) == []  # once, not every day
    gauge = REGISTRY.get_sample_value(
        "opspor_cases_overdue", {"municipality": "aalborg", "reason": "evaluation-overdue"}
    )
    assert gauge == 1
    listed = await client.get("/v1/schools/vestbjerg/cases?overdue=true", headers=STAFF)
    assert listed.json()["items"][0]["overdue_reasons"] == ["evaluation-overdue"]
    assert [e.id.rsplit(":", 1)[1] for e in await check(due + timedelta(days=8))] == [
        (due + timedelta(days=8)).isoformat()
    ]
    # The evaluation is held: the reason ends at once.
    case = await client.get(f"/v1/cases/{w.id}", headers=STAFF)
    w.etag = case.headers["etag"]
    done = (await w.record({"kind": "evaluation", "done": (due + timedelta(days=8)).isoformat(),
                            "result": "continue"})).json()  # fmt: skip
    assert done["overdue_reasons"] == []
    assert await check(due + timedelta(days=9)) == []


async def test_a_replay_publishes_every_cases_current_state_under_the_original_ids(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """After the cases topic lost data (the relay notices and replays; opspor-replay cases by
    hand), consumers get each case's state again: nothing they held comes under a new id."""
    topic = settings.cases_topic
    await use_model(client, "dk-ladder")  # its clock runs from opening
    open_one = Worker(client, await open_case(client))
    closed_one = Worker(client, await open_case(client, pupil_id="elev-2"))
    await closed_one.record(
        {"kind": "contact", "form": "call", "with": ["parents"], "on": TODAY.isoformat(),
         "reached": True, "outcome": "Tilbage i klassen"}
    )  # fmt: skip
    await closed_one.record({"kind": "evaluation", "done": TODAY.isoformat(), "result": "resolved"})
    await closed_one.close("back-in-class")
    overdue_on = TODAY + timedelta(days=15)  # the day after the follow-up was due
    async with sessionmaker() as session, session.begin():
        now = datetime.combine(overdue_on, datetime.min.time(), UTC) + timedelta(hours=10)
        assert await cases_service.check_overdue(CaseRepository(session, topic), now) == 1
    # Opened + evaluation due for each, the closing of one, the other overdue.
    cases = {open_one.id, closed_one.id}
    first = await case_events(settings, cases, 6)
    assert len(first) == 6, [e.type for e in first]

    env = {"DATABASE_URL": settings.database_url, "CASES_TOPIC": topic}
    done = await run_module("opspor_shared.replay", "cases", "--school", "vestbjerg", env=env)
    assert done.returncode == 0, done.stderr
    # The open case: opened and evaluation due (untouched since), and its overdue reminder;
    # the closed case: its closing event.
    assert done.stdout.split()[:2] == ["queued", "4"], done.stdout
    every = await case_events(settings, cases, 10)
    assert len(every) == 10
    copies: dict[str, list[CloudEvent]] = {}
    for event in every:
        copies.setdefault(event.id, []).append(event)
    # Each replayed event has the id of one consumers already had, and the same content.
    again = {i: pair for i, pair in copies.items() if len(pair) == 2}
    assert len(again) == 4 and len(copies) == 6
    assert {pair[0].type.rsplit(".", 1)[1] for pair in again.values()} == {
        "opened", "evaluation-due", "overdue", "closed",
    }  # fmt: skip
    for original, replayed in again.values():
        assert (replayed.type, replayed.subject, replayed.data) == (
            original.type,
            original.subject,
            original.data,
        )


async def case_events(settings: ApiSettings, cases: set[str], expect: int) -> list[CloudEvent]:
    """The events of these cases on the cases topic (other tests' cases share it), once at
    least `expect` of them are there (or after 30 reads)."""
    events: list[CloudEvent] = []
    for _ in range(30):
        records = await read_records(
            settings.kafka_bootstrap_servers, settings.cases_topic, 10**9, timeout=1.0
        )
        events = [
            e for r in records if (e := CloudEvent.from_bytes(r.value or b"")).subject in cases
        ]
        if len(events) >= expect:
            break
    return events


async def test_closed_cases_are_purged_with_their_text_after_the_retention_period(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await use_model(client, "dk-ladder")
    closing = Worker(client, await open_case(client, note="Flyttet til Odense"))
    await closing.close("moved-away")
    r = await client.post(
        "/v1/schools/vestbjerg/cases",
        json={"pupil_id": "still-open", "source": "team", "note": "Åben"},
        headers=STAFF,
    )
    assert r.status_code == 201
    days = settings.retention_closed_case_days
    soon = datetime.now(UTC) + timedelta(days=days - 1)
    assert (await purge_once(engine, sessionmaker, settings, lambda: soon)).deleted["cases"] == 0
    later = datetime.now(UTC) + timedelta(days=days + 1)
    report = await purge_once(engine, sessionmaker, settings, lambda: later)
    assert report.deleted["cases"] == 1
    async with sessionmaker() as session:
        left = list(await session.scalars(select(Case.pupil_id)))
        texts = list(await session.scalars(select(CaseText.text)))
        logged = (
            await session.execute(select(api_purges).where(api_purges.c.table_name == "cases"))
        ).all()
    assert left == ["still-open"]
    assert texts == ["Åben"]  # the closed case's note went with it
    assert [r.rows_deleted for r in logged] == [1]


async def test_a_case_opens_when_postgresql_plans_the_insert_generically(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # After a few runs PostgreSQL may plan a prepared insert generically; the partial unique
    # index of open cases must still be found (a bound predicate failed there, in the concern
    # consumer, with "no unique or exclusion constraint matching the ON CONFLICT").
    await use_model(client, "dk-ladder")
    async with sessionmaker() as session, session.begin():
        await session.execute(text("set local plan_cache_mode = force_generic_plan"))
        repo = CaseRepository(session)
        found = await repo.school("vestbjerg")
        assert found is not None
        for i in range(3):
            opened = await cases_service._new_case(
                repo, found[0], found[1], f"generisk-{i}", "team", "test", datetime.now(UTC)
            )
            assert opened is not None
        again = await cases_service._new_case(
            repo, found[0], found[1], "generisk-0", "team", "test", datetime.now(UTC)
        )
        assert again is None  # one open case per pupil and school
