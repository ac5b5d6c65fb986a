"""The operator's alert rules and dashboard: promtool checks the rules and runs their unit tests
(deploy/prometheus/tests.yml), and every metric they query exists in the code."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY, generate_latest

# Importing the services registers all their metrics, as their processes do.
import opspor_alerter.main
import opspor_api.app
import opspor_worker.main
from tests.ops_names import RULES, WIRED_ELSEWHERE, exposed, names_used


@pytest.fixture(scope="module")
def promtool() -> str:
    """Debian's `prometheus` package ships promtool; CI runs as root and installs it."""
    found = shutil.which("promtool")
    if found is None:
        assert os.geteuid() == 0, "promtool is missing: apt-get install prometheus (as root)"
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, check=True, capture_output=True, timeout=600)
        found = shutil.which("promtool")
    assert found is not None
    return found


def test_promtool_accepts_the_rules(promtool: str) -> None:
    r = subprocess.run(
        [promtool, "check", "rules", RULES.name],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_the_alerts_fire_as_their_unit_tests_expect(promtool: str) -> None:
    r = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_metric_the_dashboard_and_rules_query_is_defined_in_the_code() -> None:
    assert opspor_alerter.main and opspor_api.app and opspor_worker.main
    defined = exposed(generate_latest(REGISTRY).decode())
    used = names_used()
    assert len(used) >= 20
    assert used - defined - WIRED_ELSEWHERE == set()
