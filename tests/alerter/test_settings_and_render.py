"""Pure parts: settings that refuse unsafe values, routing, rendering, Message-IDs, backoff."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opspor_alerter.render import NoticeContent, build_email, message_id, render
from opspor_alerter.routing import Route, Unroutable, role_for_level, routes_for
from opspor_alerter.service import retry_delay
from opspor_alerter.settings import AlerterSettings
from opspor_shared.events import ConcernData
from opspor_shared.reference import SchoolRef
from tests.alerter.conftest import concern_event
from tests.auth import issuers_setting

BASE: dict[str, Any] = {
    "database_url": "postgresql://postgres@127.0.0.1/opspor",
    "kafka_bootstrap_servers": "127.0.0.1:9092",
    "smtp_host": "relay.aalborg.example",
    "smtp_port": 587,
    "smtp_from": "opspor@aalborg.example",
    "auth_issuers": issuers_setting(),
}


def settings(**overrides: Any) -> AlerterSettings:
    return AlerterSettings(**(BASE | overrides))


def test_valid_settings_and_defaults() -> None:
    s = settings()
    assert (s.smtp_timeout_seconds, s.max_attempts, s.lease_seconds) == (10.0, 10, 120.0)
    assert s.smtp_ca_file is None and s.smtp_password is None
    assert s.database_url.startswith("postgresql+asyncpg://")


@pytest.mark.parametrize("missing", ["smtp_host", "smtp_port", "smtp_from"])
def test_required_settings_have_no_default(missing: str) -> None:
    values = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ValidationError):
        AlerterSettings(**values)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        if key == "auth_issuers":
            value = json.dumps([c.model_dump(mode="json") for c in value])
        monkeypatch.setenv(key.upper(), str(value))
    monkeypatch.setenv("SMTP_USERNAME", "relay-user")
    monkeypatch.setenv("SMTP_PASSWORD", "pw-from-env")
    s = AlerterSettings()  # type: ignore[call-arg]
    assert s.smtp_port == 587 and s.smtp_password is not None
    assert s.smtp_password.get_secret_value() == "pw-from-env"


@pytest.mark.parametrize(
    "overrides",
    [
        {"smtp_username": "user"},  # a username without a password
        {"smtp_password": "pw"},  # a password without a username
        {"smtp_username": "user", "smtp_password": ""},
        {"smtp_port": 0},
        {"smtp_host": "smtp://relay.example"},
        {"smtp_from": "Opspor <opspor@aalborg.example>"},
        {"smtp_ca_file": "/nonexistent/ca.pem"},
        {"notice_link_base": "http://opspor.example"},  # links must be https
        {"notice_link_base": "https://user:pw@opspor.example"},
        {"message_id_domain": "bad domain"},
        {"retry_base_seconds": 10, "retry_max_seconds": 5},
        {"lease_seconds": 30, "smtp_timeout_seconds": 10},  # a slow send would be repeated
        {"max_attempts": 0},
        {"delivery_concurrency": 0},
    ],
)
def test_unsafe_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(**overrides)


def test_validation_errors_do_not_echo_the_password(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        settings(smtp_password="Top-Secret-Value")  # no username
    problems = info.value.errors(include_input=False)
    assert "Top-Secret-Value" not in repr(problems)


def test_webhook_secret_keys_must_be_fernet_keys_and_are_never_echoed() -> None:
    good = "Q2zBXQ7i4Qm6ZL3xQm4W8r2tV9sYk1nP0aHcEdFgJjU="
    assert settings(webhook_secret_keys=f" {good} , {good}").secret_box().seals
    assert not settings().secret_box().seals
    for bad in ("not-a-key-Top-Secret", f"{good},not-a-key-Top-Secret", " , "):
        with pytest.raises(ValidationError) as info:
            settings(webhook_secret_keys=bad)
        problems = info.value.errors(include_input=False)
        assert "webhook_secret_keys" in repr(problems)
        assert "Top-Secret" not in repr(problems) and good not in repr(problems)


def test_link_base_is_normalised() -> None:
    assert settings(notice_link_base="https://opspor.example/").notice_link_base == (
        "https://opspor.example"
    )
    assert settings(notice_link_base="http://localhost:8000").notice_link_base


def _school(**overrides: Any) -> SchoolRef:
    values: dict[str, Any] = {
        "id": "s",
        "municipality_id": "851",
        "name": "Skolen",
        "country": "DK",
        "timezone": "Europe/Copenhagen",
        "language": "da",
        "rule_packs": ("dk-aalborg-2018",),
        "mailbox": "school@x.example",
        "municipality_name": "Aalborg",
        "ppr_mailbox": "ppr@x.example",
        "unit_mailbox": None,
    }
    return SchoolRef(**(values | overrides))


def test_routing_by_level_without_a_routing_of_the_municipalitys() -> None:
    """The default table (opspor_shared.routing.DEFAULT)."""
    school = _school()

    def route(level: str, at: SchoolRef = school) -> list[Route | Unroutable]:
        found, missing = routes_for(level, at, [])
        return [*found, *missing]

    assert route("concern") == [Route("school@x.example", "school")]
    assert route("persistent") == [Route("school@x.example", "school")]
    assert route("ppr-may") == [Route("ppr@x.example", "ppr")]
    assert route("ppr-must") == [Route("ppr@x.example", "ppr")]
    assert route("notify-municipality") == [Unroutable("municipality", "no_mailbox")]
    assert route("ppr-may", _school(ppr_mailbox="  ")) == [Unroutable("ppr", "no_mailbox")]
    assert role_for_level("concern") == "school" and role_for_level("ppr-must") == "ppr"


def _content() -> NoticeContent:
    concern = ConcernData.model_validate(
        concern_event(concern_id="0b6f6c1e-3c2f-4d39-9d0e-5a1d2b3c4d5e").data
    )
    return NoticeContent.from_concern(concern, "Vestbjerg Skole")


def test_content_keeps_dates_only() -> None:
    content = _content()
    assert content.contributing_dates[:3] == [
        date(2026, 2, 16),
        date(2026, 2, 17),
        date(2026, 2, 24),
    ]
    assert len(content.contributing_dates) == 8  # two slots on one day count once
    dumped = str(content.model_dump(mode="json"))
    assert "illness" not in dumped and "unauthorized" not in dumped and "extent" not in dumped


@pytest.mark.parametrize(
    ("language", "subject", "label"),
    [
        ("da", "Tilbagekaldt: bekymrende fravær for pupil-4711, Vestbjerg Skole", "Se:"),
        ("en", "Withdrawn: concerning absence of pupil-4711, Vestbjerg Skole", "Where to look:"),
        ("nb", "Trukket tilbake: bekymringsfullt fravær for pupil-4711, Vestbjerg Skole", "Se:"),
        ("sv", "Withdrawn: concerning absence of pupil-4711, Vestbjerg Skole", "Where to look:"),
    ],
)
def test_withdrawal_text_per_language(language: str, subject: str, label: str) -> None:
    content = _content()
    rendered = render("withdrawn", content, language, "https://opspor.example")
    assert rendered.subject == f"{subject} \u2013 {content.rule} ({content.pack_id})"
    link = f"{label} https://opspor.example/ui/concerns/{content.concern_id}"
    assert link in " ".join(rendered.body.split())


def test_concerns_of_one_evaluation_render_as_one_notice_naming_each_pack_and_rule() -> None:
    first = _content()
    second = first.model_copy(
        update={
            "concern_id": "c-quarter",
            "pack_id": "dk-national",
            "rule_id": "share-15-quarter",
            "rule": "absence share at least 15% over the quarter (unauthorized)",
            "summary": "25.0% absence over 20 school days, limit 15%",
        }
    )

    rendered = render("raised", [second, first], "da", None)

    assert rendered.subject == (
        "Bekymrende fravær: pupil-4711, Vestbjerg Skole \u2013 2 regler: "
        f"{first.pack_id}/{first.rule_id}, dk-national/share-15-quarter"
    )
    body = " ".join(rendered.body.split())
    assert "har opfyldt 2 regler" in body
    # Each concern in its own numbered section, with its pack, rule, finding and id.
    one, two = body.split(" 1. ")[1].split(" 2. ")
    assert first.concern_id in one and first.summary in one and first.pack_id in one
    assert "c-quarter" in two and "dk-national (share-15-quarter v1)" in two
    assert "25.0% absence over 20 school days, limit 15%" in two
    assert "skolens bekymringer" in two  # no web page configured: where to look


def test_message_id_is_deterministic_per_concern_recipient_kind_revision() -> None:
    a = message_id("c1", "School@X.example", "raised", 1, "opspor.test")
    assert a == message_id("c1", "school@x.example", "raised", 1, "opspor.test")
    assert a.startswith("<") and a.endswith("@opspor.test>")
    others = {
        message_id("c2", "school@x.example", "raised", 1, "opspor.test"),
        message_id("c1", "ppr@x.example", "raised", 1, "opspor.test"),
        message_id("c1", "school@x.example", "withdrawn", 1, "opspor.test"),
        message_id("c1", "school@x.example", "raised", 2, "opspor.test"),
    }
    assert a not in others and len(others) == 4


def test_built_mail_is_identical_for_a_resend() -> None:
    def build() -> bytes:
        return build_email(
            kind="raised",
            content=_content(),
            language="da",
            sender="opspor@aalborg.example",
            recipient="school@x.example",
            message_id="<m@opspor.test>",
            created_at=datetime(2026, 3, 12, 7, 0, tzinfo=UTC),
            link_base=None,
        ).as_bytes()

    assert build() == build()
    assert b"Auto-Submitted: auto-generated" in build()


def test_retry_delay_doubles_with_cap_and_jitter() -> None:
    s = settings(retry_base_seconds=5, retry_max_seconds=60)
    exact = [retry_delay(n, s, jitter=lambda: 1.0) for n in range(1, 7)]
    assert exact == [5, 10, 20, 40, 60, 60]
    assert retry_delay(1, s, jitter=lambda: 0.8) == 4.0
    assert retry_delay(500, s, jitter=lambda: 1.2) == 72.0
    for n in range(1, 20):
        assert (
            0.8 * min(60, 5 * 2 ** (n - 1)) <= retry_delay(n, s) <= 1.2 * min(60, 5 * 2 ** (n - 1))
        )
