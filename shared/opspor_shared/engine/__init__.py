"""The rule engine: a pure function of (calendar, registrations, rule pack, horizon)."""

from opspor_shared.engine.evaluate import CONCERN_NAMESPACE, concern_id, evaluate
from opspor_shared.engine.model import (
    CATEGORIES,
    DEFAULT_DAY_THRESHOLD,
    PERIOD_KINDS,
    RULE_KINDS,
    UNITS_PER_DAY,
    Category,
    Contribution,
    Crossing,
    Period,
    PeriodKind,
    Registration,
    Rule,
    RuleKind,
    RulePack,
    RulePackVersion,
)
from opspor_shared.engine.packs import PackError, builtin_packs, load_pack_file, parse_pack

__all__ = [
    "CATEGORIES",
    "CONCERN_NAMESPACE",
    "DEFAULT_DAY_THRESHOLD",
    "PERIOD_KINDS",
    "RULE_KINDS",
    "UNITS_PER_DAY",
    "Category",
    "Contribution",
    "Crossing",
    "PackError",
    "Period",
    "PeriodKind",
    "Registration",
    "Rule",
    "RuleKind",
    "RulePack",
    "RulePackVersion",
    "builtin_packs",
    "concern_id",
    "evaluate",
    "load_pack_file",
    "parse_pack",
]
