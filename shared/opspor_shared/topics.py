"""Checks that existing topics have the partition count and retention the settings ask for.

Opspor creates missing topics itself; topics created earlier (by deploy/, by hand, by an older
configuration) are left as they are, but a difference is worth a warning: fewer partitions cap
the consumers' parallelism, and another retention changes how long events can be replayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import Gauge

from opspor_shared.logging import get_logger

log = get_logger(__name__)

MISMATCH = Gauge(
    "opspor_kafka_topic_config_mismatch",
    "1 when an existing topic's setting differs from the configuration (partitions, retention.ms)",
    ["topic", "setting"],
)


_reported: set[tuple[str, str, str]] = set()


def differences(
    expected: Mapping[str, Mapping[str, str]], actual: Mapping[str, Mapping[str, str]]
) -> list[tuple[str, str, str, str]]:
    """(topic, setting, expected, actual) for every setting that differs."""
    out = []
    for topic, wanted in expected.items():
        have = actual.get(topic, {})
        for setting, value in wanted.items():
            found = have.get(setting)
            if found is not None and found != value:
                out.append((topic, setting, value, found))
    return out


async def _actual(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, dict[str, str]]:
    actual: dict[str, dict[str, str]] = {t: {} for t in topics}
    for described in await admin.describe_topics(list(topics)):
        if described.get("topic") in actual and not described.get("error_code"):
            actual[described["topic"]]["partitions"] = str(len(described.get("partitions", [])))
    responses: list[Any] = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
    )
    for response in responses:
        for resource in response.resources:
            # (error code, error message, resource type, name, entries)
            if resource[0] or resource[3] not in actual:
                continue
            for entry in resource[4]:
                actual[resource[3]][entry[0]] = str(entry[1])
    return actual


async def check_topics(
    admin: AIOKafkaAdminClient, expected: Mapping[str, Mapping[str, str]]
) -> list[tuple[str, str, str, str]]:
    """Logs a warning and sets the metric for each difference; never fails the caller."""
    if not expected:
        return []
    try:
        actual = await _actual(admin, list(expected))
    except Exception as exc:
        # Some brokers (or ACLs) refuse DescribeConfigs; the check is advice, not a gate.
        log.info("topic_check_unavailable", error=type(exc).__name__)
        return []
    found = differences(expected, actual)
    wrong = {(t, s) for t, s, _, _ in found}
    for topic, wanted in expected.items():
        for setting in wanted:
            if setting in actual.get(topic, {}):
                MISMATCH.labels(topic, setting).set(1 if (topic, setting) in wrong else 0)
    for topic, setting, value, have in found:
        # Topics are ensured on every reconnect and every few seconds by the relays: say it
        # once per difference, not each time (the metric stays set).
        if (topic, setting, have) in _reported:
            continue
        _reported.add((topic, setting, have))
        log.warning(
            "topic_config_differs",
            topic=topic,
            setting=setting,
            configured=value,
            actual=have,
            hint="Opspor does not change existing topics; alter the topic (kafka-configs / "
            "kafka-topics --alter) or the setting (TOPIC_PARTITIONS, TOPIC_RETENTION_MS)",
        )
    return found
