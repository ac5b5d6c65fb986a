"""The installed commands, started without their environment, say in one line what is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
NEEDS_SETTINGS = {
    "opspor-api": ["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "AUTH_ISSUERS"],
    "opspor-worker": ["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "AUTH_ISSUERS"],
    "opspor-alerter": ["DATABASE_URL", "AUTH_ISSUERS", "SMTP_HOST", "SMTP_PORT", "SMTP_FROM"],
    "opspor-api-purge": ["DATABASE_URL"],
    "opspor-worker-purge": ["DATABASE_URL"],
    "opspor-alerter-purge": ["DATABASE_URL"],
    "opspor-migrate": ["DATABASE_URL"],
}


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / command)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("command", sorted(NEEDS_SETTINGS))
def test_a_command_without_its_environment_names_what_is_missing_in_one_line(
    command: str,
) -> None:
    done = run(command, {})
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{command}: missing ")
    for name in NEEDS_SETTINGS[command]:
        assert name in lines[0]


def test_a_wrong_value_is_named_without_echoing_any_value() -> None:
    secret = "s3cret-smtp-password"
    done = run(
        "opspor-alerter",
        {
            "DATABASE_URL": "mysql://opspor@db/opspor",
            "SMTP_PASSWORD": secret,
            "SMTP_USERNAME": "opspor",
            "SMTP_PORT": "not-a-port",
        },
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "invalid DATABASE_URL" in line and "SMTP_PORT" in line
    assert secret not in line and "mysql://" not in line and "Traceback" not in done.stderr


def test_the_token_command_is_installed_and_mints_a_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "opspor-token"), "--key-dir", str(tmp_path), "issue", "--role", "operations"],
        env={},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(".") == 2 and not done.stdout.startswith("Bearer")
