"""deploy/asyncapi.yaml: every message a channel carries is sent by one of its send operations,
and the consumer settings an integrator needs are in its description."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DOCUMENT = Path(__file__).resolve().parents[1] / "deploy" / "asyncapi.yaml"


def test_send_operations_list_every_message_of_their_channel() -> None:
    doc: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    sent: dict[str, set[str]] = {}
    for operation in doc["operations"].values():
        # An operation without a message list sends everything its channel carries.
        if operation["action"] == "send" and "messages" in operation:
            channel = operation["channel"]["$ref"].rsplit("/", 1)[-1]
            sent.setdefault(channel, set()).update(
                m["$ref"].rsplit("/", 1)[-1] for m in operation["messages"]
            )
    for name in ("registrations", "concerns", "cases"):
        carried = set(doc["channels"][name]["messages"])
        assert carried == sent[name], name
    assert "enrolmentRecorded" in sent["registrations"]


def test_the_description_says_what_a_consumer_sets() -> None:
    description = yaml.safe_load(DOCUMENT.read_text())["info"]["description"]
    for setting in ("session.timeout.ms", "heartbeat.interval.ms", "enable.auto.commit"):
        assert setting in description
