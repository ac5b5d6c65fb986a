"""Existing topics whose partitions or retention differ from the configuration are reported."""

from __future__ import annotations

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from opspor_shared.kafka import ensure_topics
from opspor_shared.settings import ServiceSettings
from opspor_shared.topics import differences
from tests.auth import issuers_setting


def test_differences_name_topic_setting_and_both_values() -> None:
    expected = {"a": {"partitions": "6", "retention.ms": "100"}, "b": {"partitions": "1"}}
    actual = {"a": {"partitions": "3", "retention.ms": "100"}, "b": {}}
    assert differences(expected, actual) == [("a", "partitions", "6", "3")]


async def test_an_existing_topic_with_other_partitions_is_reported(
    kafka_bootstrap: str, topic_suffix: str
) -> None:
    topic = f"absence.check.v1.{topic_suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"retention.ms": "3600000"},
                )
            ]
        )
    finally:
        await admin.close()
    settings = ServiceSettings(
        database_url="postgresql+asyncpg://unused/unused",
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_partitions=3,
        auth_issuers=issuers_setting(),
    )
    with structlog.testing.capture_logs() as logs:
        await ensure_topics(settings, [topic])
    warnings = [e for e in logs if e["event"] == "topic_config_differs"]
    partitions = [w for w in warnings if w["setting"] == "partitions"]
    assert partitions and partitions[0]["configured"] == "3" and partitions[0]["actual"] == "1"
    retention = [w for w in warnings if w["setting"] == "retention.ms"]
    assert retention and retention[0]["actual"] == "3600000"
    assert retention[0]["configured"] == str(settings.topic_retention_ms)
    for setting in ("partitions", "retention.ms"):
        value = REGISTRY.get_sample_value(
            "opspor_kafka_topic_config_mismatch", {"topic": topic, "setting": setting}
        )
        assert value == 1.0
    # A topic that matches is reported as matching.
    matching = settings.model_copy(update={"topic_partitions": 1, "topic_retention_ms": 3600000})
    with structlog.testing.capture_logs() as logs:
        await ensure_topics(matching, [topic])
    assert not [e for e in logs if e["event"] == "topic_config_differs"]
    assert (
        REGISTRY.get_sample_value(
            "opspor_kafka_topic_config_mismatch", {"topic": topic, "setting": "partitions"}
        )
        == 0.0
    )
