"""The worker assembles a concern's explanation directly; it must equal ExplanationData's JSON
form exactly, or a re-evaluation would see every stored explanation as changed (and publish a
revision of each), and the api could not read what the worker stored."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from opspor_shared.engine import Crossing, RulePack, evaluate
from opspor_shared.events import ContributionData, ExplanationData
from opspor_worker.service import explanation_of
from tests.engine.test_properties import scenarios


def through_the_model(crossing: Crossing, pack: RulePack) -> dict[str, Any]:
    version = next(v for v in pack.versions if v.version == crossing.rule_version)
    rule = version.rule(crossing.rule_id)
    assert rule is not None
    return ExplanationData(
        pack_id=crossing.pack_id,
        rule_id=crossing.rule_id,
        rule_version=crossing.rule_version,
        rule=rule.describe(),
        kind=crossing.kind,
        level=crossing.level,
        window_first=crossing.window_first,
        window_last=crossing.window_last,
        window_days=crossing.window_days,
        value=crossing.value,
        threshold=crossing.threshold,
        summary=crossing.summary,
        contributing=[
            ContributionData(date=c.date, slot=c.slot, category=c.category, extent=c.extent)
            for c in crossing.contributing
        ],
    ).model_dump(mode="json")


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_the_explanation_equals_the_models_json_form(scenario: dict[str, Any]) -> None:
    pack = scenario["pack"]
    for crossing in evaluate(**scenario):
        built = explanation_of(crossing, pack)
        assert built == through_the_model(crossing, pack)
        # And it reads back as the model, as the api reads it.
        assert ExplanationData.model_validate(built).model_dump(mode="json") == built
