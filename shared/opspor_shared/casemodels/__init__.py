"""Case models: the phases a municipality's follow-up goes through, as validated data.

Like rule packs, the shipped models are TOML files beside this module (`ros-herning`,
`baerum`, `dk-ladder`, DOMAIN.md section 7) and a municipality may store its own; the same
parser checks both and names every mistake by its place (`phases[2].requires[0]`). The code
interprets a small vocabulary of requirements (REQUIREMENTS); everything else is data.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, get_args

from opspor_shared.text import control_problem

LANGUAGES = ("da", "nb", "en")

# What a phase can require before it is left. Each is checked against the case's entries
# (opspor_api.cases.service), including who took part; the texts say it, since a refusal and
# the case page name what is missing with them. "The family" and "the home" are the `parents`
# code of a contact or plan: parents or guardians (Bærum's "foresatte").
REQUIREMENTS: dict[str, str] = {
    "eligibility-decision": "an eligibility decision (eligible)",
    "meeting": "a meeting held with the pupil and the family",
    "action-plan": "an action plan",
    "goal": "at least one concrete goal",
    "contact": "a contact with the home that reached someone, with its outcome",
    "causes": "causes mapped in the cause circle",
    "goals-followed-up": "every goal followed up (achieved, partly achieved or not achieved)",
    "agreement": "an agreement sheet with the pupil, the family and the school",
    "cooperation-agreement": "a cooperation agreement",
    "leader": "a named leader responsible for the case",
    "coordinator": "a named coordinator (tovholder)",
    "follow-up-date": "a follow-up date agreed",
    "sparring": "sparring given by the resource team",
    "intervention": "at least one intervention",
    "evaluation-escalate": "an evaluation that decided on further measures",
    # The ladder's plan (seed 001): an action plan entry that itself carries these; a model
    # that requires it has every action plan refused without them.
    "support-plan": (
        "an action plan with the pupil and the parents: the support in class and how they "
        "take part, how long it runs, when it is followed up"
    ),
}

# Who is responsible for a phase, and which mailbox a reminder about it goes to.
RESPONSIBLE: dict[str, str] = {
    "contact-teacher": "school",
    "class-team": "school",
    "resource-team": "school",
    "school-leader": "school",
    "ppr": "ppr",
    "municipal-unit": "municipality",
}

# Outcomes with rules of their own (DOMAIN.md s.7); any other outcome needs the current
# phase's requirements, and for a model with evaluations a `resolved` evaluation.
NO_CONTACT = "no-contact"
NOT_ELIGIBLE = "not-eligible"
NO_CONCERN_AFTER_CONTACT = "no-concern-after-contact"
LEFT = ("moved-away", "other-provision")


class CaseModelError(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {what}" for where, what in problems))
        self.problems = problems


@dataclass(frozen=True)
class Phase:
    id: str
    names: Mapping[str, str]
    responsible: str
    requires: tuple[str, ...]

    @property
    def party(self) -> str:
        return RESPONSIBLE[self.responsible]


@dataclass(frozen=True)
class Intervention:
    code: str
    names: Mapping[str, str]


EvaluationFrom = Literal["opening", "plan"]
EVALUATION_FROM: tuple[EvaluationFrom, ...] = get_args(EvaluationFrom)


@dataclass(frozen=True)
class CaseModel:
    id: str
    version: str
    source: str
    names: Mapping[str, str]
    opening_levels: tuple[str, ...]
    default_length_days: int
    evaluation_days: int
    # When the evaluation clock starts: "opening" (the ladder's resource team meets every 14
    # days from the start) or "plan" (Bærum: "evaluation 3 weeks after each plan"; no clock
    # before the first plan).
    evaluation_from: EvaluationFrom
    outcomes: tuple[str, ...]
    exclusions: tuple[str, ...]
    interventions: tuple[Intervention, ...]
    phases: tuple[Phase, ...]

    def phase(self, phase_id: str) -> Phase | None:
        return next((p for p in self.phases if p.id == phase_id), None)

    def next_phase(self, phase_id: str) -> Phase | None:
        ids = [p.id for p in self.phases]
        i = ids.index(phase_id)
        return self.phases[i + 1] if i + 1 < len(ids) else None

    @property
    def closed(self) -> Phase:
        return self.phases[-1]


def _slug(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and value.replace("-", "").isalnum()
        and value.isascii()
        and value == value.lower()
    )


def _text(value: object, where: str, problems: list[tuple[str, str]]) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 300:
        problems.append((where, "must be a non-empty string of at most 300 characters"))
        return ""
    if (problem := control_problem(value)) is not None:
        problems.append((where, problem))
    return value


def _names(value: object, where: str, problems: list[tuple[str, str]]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        problems.append((where, "must be a table with da, nb and en"))
        return {}
    for key in value:
        if key not in LANGUAGES:
            problems.append((f"{where}.{key}", "unknown language; expected da, nb or en"))
    return {lang: _text(value.get(lang), f"{where}.{lang}", problems) for lang in LANGUAGES}


def _slugs(value: object, where: str, problems: list[tuple[str, str]]) -> tuple[str, ...]:
    if not isinstance(value, list):
        problems.append((where, "must be a list"))
        return ()
    out = []
    for i, item in enumerate(value):
        if not _slug(item):
            problems.append((f"{where}[{i}]", "must be a lower-case code such as back-in-class"))
        elif item in out:
            problems.append((f"{where}[{i}]", f"{item!r} is listed twice"))
        else:
            out.append(item)
    return tuple(out)


def _days(value: object, where: str, problems: list[tuple[str, str]]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 730:
        problems.append((where, "must be a whole number of days from 0 to 730"))
        return 0
    return value


KEYS = {
    "id",
    "version",
    "source",
    "name",
    "opening_levels",
    "default_length_days",
    "evaluation_days",
    "evaluation_from",
    "outcomes",
    "exclusions",
    "interventions",
    "phases",
}


def parse_model(data: Mapping[str, Any]) -> CaseModel:
    """A case model from its document; CaseModelError naming every mistake by its place."""
    problems: list[tuple[str, str]] = []
    for key in data:
        if key not in KEYS:
            problems.append((key, f"unknown key; expected one of {', '.join(sorted(KEYS))}"))
    model_id = data.get("id")
    if not _slug(model_id):
        problems.append(("id", "must be a lower-case code such as ros-herning"))
    version = _text(data.get("version"), "version", problems)
    source = _text(data.get("source"), "source", problems)
    names = _names(data.get("name"), "name", problems)
    opening = _slugs(data.get("opening_levels", ["concern"]), "opening_levels", problems)
    length = _days(data.get("default_length_days", 0), "default_length_days", problems)
    evaluation = _days(data.get("evaluation_days", 0), "evaluation_days", problems)
    evaluation_from: EvaluationFrom = data.get("evaluation_from", "opening")
    if evaluation_from not in EVALUATION_FROM:
        problems.append(("evaluation_from", f"must be one of {', '.join(EVALUATION_FROM)}"))
    outcomes = _slugs(data.get("outcomes"), "outcomes", problems)
    if not outcomes:
        problems.append(("outcomes", "must list at least one outcome a case may close with"))
    exclusions = _slugs(data.get("exclusions", []), "exclusions", problems)
    interventions: list[Intervention] = []
    raw_interventions = data.get("interventions", [])
    if not isinstance(raw_interventions, list):
        problems.append(("interventions", "must be a list"))
        raw_interventions = []
    for i, raw in enumerate(raw_interventions):
        where = f"interventions[{i}]"
        if not isinstance(raw, Mapping) or not _slug(raw.get("code")):
            problems.append((f"{where}.code", "must be a lower-case code"))
            continue
        if "name" in raw:
            # As GET /v1/case-models serves it (and a phase writes its name), so that a served
            # model can be stored back as it is.
            for key in set(raw) - {"code", "name"}:
                problems.append((f"{where}.{key}", "unknown key; expected code and name"))
            labels = _names(raw["name"], f"{where}.name", problems)
        else:
            # As the shipped TOML files write it: the languages beside the code.
            labels = _names({k: v for k, v in raw.items() if k != "code"}, where, problems)
        interventions.append(Intervention(raw["code"], labels))
    phases: list[Phase] = []
    raw_phases = data.get("phases")
    if not isinstance(raw_phases, list) or len(raw_phases) < 2:
        problems.append(("phases", "must list at least one working phase and the closed phase"))
        raw_phases = raw_phases if isinstance(raw_phases, list) else []
    seen: set[str] = set()
    for i, raw in enumerate(raw_phases):
        where = f"phases[{i}]"
        if not isinstance(raw, Mapping):
            problems.append((where, "must be a table"))
            continue
        phase_id = raw.get("id")
        if not _slug(phase_id):
            problems.append((f"{where}.id", "must be a lower-case code"))
            phase_id = f"?{i}"
        elif phase_id in seen:
            problems.append((f"{where}.id", f"phase {phase_id!r} is listed twice"))
        seen.add(str(phase_id))
        responsible = raw.get("responsible")
        if responsible not in RESPONSIBLE:
            problems.append(
                (f"{where}.responsible", f"must be one of {', '.join(sorted(RESPONSIBLE))}")
            )
        requires = _slugs(raw.get("requires", []), f"{where}.requires", problems)
        for j, requirement in enumerate(requires):
            if requirement not in REQUIREMENTS:
                problems.append(
                    (
                        f"{where}.requires[{j}]",
                        f"unknown requirement; expected one of {', '.join(sorted(REQUIREMENTS))}",
                    )
                )
        phases.append(
            Phase(
                str(phase_id),
                _names(raw.get("name"), f"{where}.name", problems),
                str(responsible),
                requires,
            )
        )
    if phases and phases[-1].requires:
        problems.append(
            (f"phases[{len(phases) - 1}].requires", "the closed phase requires nothing")
        )
    if problems:
        raise CaseModelError(problems)
    return CaseModel(
        id=str(model_id),
        version=version,
        source=source,
        names=names,
        opening_levels=opening,
        default_length_days=length,
        evaluation_days=evaluation,
        evaluation_from=evaluation_from,
        outcomes=outcomes,
        exclusions=exclusions,
        interventions=tuple(interventions),
        phases=tuple(phases),
    )


@cache
def builtin_models() -> dict[str, CaseModel]:
    folder = resources.files("opspor_shared") / "casemodels"
    models = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            model = parse_model(tomllib.loads(entry.read_text(encoding="utf-8")))
            models[model.id] = model
    return models


def default_model_id(country: str) -> str:
    """The model a municipality follows until it picks one: Norway's Bærum, else the ladder."""
    return "baerum" if country == "NO" else "dk-ladder"
