"""Faults an operator's bad night brings, injected into the real system (three service
processes, the embedded broker, the TLS mailbox, PostgreSQL behind a cuttable proxy).

Each scenario posts its own pupils through a client that retries with the same event ids and
asserts: registrations accepted = stored = reached the worker, concerns = the concerns the
workload must raise, mails = concerns, duplicates <= crashes while sending.
OPSPOR_FAULTS_LONG=1 (`make faults`) runs more pupils and repeats, and prints the table.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opspor_shared.devstack.net import free_port
from opspor_shared.devstack.postgres import admin_url, create_database, drop_database
from opspor_shared.devstack.stack import Stack
from tests.auth import RouteAuth
from tests.e2e.test_pipeline import configure
from tests.faults.harness import LONG, Figures, Supervisor, Workload, figures, inject, table
from tests.faults.proxy import CuttableProxy

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RESULTS: list[Figures] = []
CONCERNED, QUIET = (30, 30) if LONG else (3, 3)
ROUNDS = 3 if LONG else 1


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, CuttableProxy]]:
    var_dir = tmp_path_factory.mktemp("faults")
    admin = admin_url(ROOT / "var")
    name = f"opspor_faults_{os.getpid()}"
    url = asyncio.run(create_database(admin, name, recreate=True))
    proxy, via = CuttableProxy.for_database(url)
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = via  # the Stack and its services go through the proxy
    try:
        with Stack(
            var_dir=var_dir,
            mailbox_port=free_port(),
            extra_env={
                "TICK_SECONDS": "1",
                "LOG_LEVEL": "INFO",
                "TOPIC_CHECK_SECONDS": "1",
                # One notice in flight per process: a crash while sending can resend one.
                "DELIVERY_CONCURRENCY": "1",
                "LEASE_SECONDS": "60",
                "NOTICE_SETTLE_SECONDS": "0",
            },
        ) as stack:
            with httpx.Client(
                base_url=stack.api_url, timeout=10, auth=RouteAuth(issuer=stack.issuer)
            ) as api:
                configure(api)
            yield stack, proxy
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
        proxy.stop()
        asyncio.run(drop_database(admin, name))
        if RESULTS:
            report = table(RESULTS)
            print("\n" + report)
            (ROOT / "var").mkdir(exist_ok=True)
            (ROOT / "var" / "faults-table.md").write_text(report + "\n")


def _run(
    stack: Stack,
    scenario: str,
    inject_fault: tuple[str, str] | None = None,
    *,
    while_sending: bool = False,
) -> Figures:
    started = time.monotonic()
    rows: list[Figures] = []
    for round_ in range(ROUNDS):
        workload = Workload(f"{scenario}{round_}", CONCERNED, QUIET)
        with Supervisor(stack) as supervisor:
            if inject_fault is not None:
                inject(stack, supervisor, *inject_fault)
            unavailable = workload.post(stack)
            result = figures(
                stack,
                workload,
                scenario,
                crashes=0,
                crashes_while_sending=0,
                unavailable=unavailable,
                started=started,
            )
            crashes = sum(supervisor.crashes.values())
        result.crashes = crashes
        result.crashes_while_sending = crashes if while_sending else 0
        rows.append(result)
    total = _sum(scenario, rows)
    RESULTS.append(total)
    return total


def _sum(scenario: str, rows: list[Figures]) -> Figures:
    def add(attr: str) -> int:
        return sum(getattr(r, attr) for r in rows)

    return Figures(
        scenario=scenario,
        accepted=add("accepted"),
        stored=add("stored"),
        reached_worker=add("reached_worker"),
        concerns=add("concerns"),
        expected_concerns=add("expected_concerns"),
        mails=add("mails"),
        distinct_mails=add("distinct_mails"),
        crashes=add("crashes"),
        crashes_while_sending=add("crashes_while_sending"),
        unavailable_503=add("unavailable_503"),
        seconds=rows[-1].seconds,
    )


def test_kill_api_after_commit_before_publish(proxied: tuple[Stack, CuttableProxy]) -> None:
    stack, _ = proxied
    result = _run(stack, "api-commit", ("api", "relay_before_publish"))
    assert result.crashes >= 1
    result.check()


def test_kill_worker_after_publish_before_commit(proxied: tuple[Stack, CuttableProxy]) -> None:
    stack, _ = proxied
    result = _run(
        stack, "worker-publish", ("threshold-worker", "relay_after_publish_before_delete")
    )
    assert result.crashes >= 1
    result.check()


def test_kill_worker_after_handling_before_offset_commit(
    proxied: tuple[Stack, CuttableProxy],
) -> None:
    stack, _ = proxied
    result = _run(
        stack, "worker-offset", ("threshold-worker", "consumer_after_handle_before_commit")
    )
    assert result.crashes >= 1
    result.check()


def test_kill_alerter_after_mail_accepted_before_recorded(
    proxied: tuple[Stack, CuttableProxy],
) -> None:
    stack, _ = proxied
    result = _run(
        stack,
        "alerter-send",
        ("alerter", "alerter_after_accept_before_record"),
        while_sending=True,
    )
    assert result.crashes >= 1
    result.check()


def test_broker_restart_that_loses_the_topics(proxied: tuple[Stack, CuttableProxy]) -> None:
    """Registrations published but not yet consumed when the broker loses its topics reach the
    worker anyway: the api's relay notices and publishes its events again from its tables."""
    stack, _ = proxied
    assert stack.broker is not None
    started = time.monotonic()
    worker = stack.services["threshold-worker"]
    before = Workload("broker-before", CONCERNED, QUIET)
    after = Workload("broker-after", CONCERNED, QUIET)
    worker.stop()
    try:
        before.post(stack)
        _wait_outbox_empty(stack)
        stack.broker.stop()
        stack.broker.start()  # same port, empty memory: every topic and offset is gone
    finally:
        worker.start()
        worker.wait_ready()
    after.post(stack)
    parts = [
        figures(
            stack,
            w,
            "broker-loss",
            crashes=0,
            crashes_while_sending=0,
            unavailable=0,
            started=started,
        )
        for w in (before, after)
    ]
    result = _sum("broker restart, topics lost", parts)
    RESULTS.append(result)
    result.check()
    with httpx.Client(base_url=stack.api_url, timeout=10) as api:
        assert api.get("/readyz").status_code == 200  # healed: ready again


def test_smtp_outage(proxied: tuple[Stack, CuttableProxy]) -> None:
    stack, _ = proxied
    assert stack.mailbox is not None
    started = time.monotonic()
    workload = Workload("smtp-outage", CONCERNED, QUIET)
    stack.mailbox.stop()
    try:
        workload.post(stack)
        time.sleep(3)  # deliveries fail and are retried meanwhile
    finally:
        stack.mailbox.start()
    result = figures(
        stack,
        workload,
        "smtp outage",
        crashes=0,
        crashes_while_sending=0,
        unavailable=0,
        started=started,
    )
    RESULTS.append(result)
    result.check()


def test_database_outage_answers_503(proxied: tuple[Stack, CuttableProxy]) -> None:
    """The database goes away while a school system is posting: every request meanwhile is a
    503 with Retry-After (never a 500), the client retries with the same event ids, and once the
    database is back everything accepted is stored exactly once."""
    stack, proxy = proxied
    started = time.monotonic()
    workload = Workload("db-outage", CONCERNED, QUIET)
    proxy.down()
    try:
        auth = RouteAuth(issuer=stack.issuer)
        with httpx.Client(base_url=stack.api_url, timeout=10, auth=auth) as api:
            r = api.post("/v1/registrations/batch", json={"items": workload.items()[:5]})
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) > 0
        retried: list[int] = []
        poster = threading.Thread(target=lambda: retried.append(workload.post(stack)))
        poster.start()
        time.sleep(3)  # the client meets the outage and keeps retrying
    finally:
        proxy.up()
    poster.join(120)
    assert retried, "the client did not finish posting"
    unavailable = 1 + retried[0]
    assert unavailable >= 2
    result = figures(
        stack,
        workload,
        "database outage",
        crashes=0,
        crashes_while_sending=0,
        unavailable=unavailable,
        started=started,
    )
    RESULTS.append(result)
    result.check()
    api_log = (stack.var_dir / "logs" / "api.log").read_text()
    assert "unhandled_error" not in api_log  # every request of the outage was a 503
    assert api_log.count("outage_started") >= 1


def _wait_outbox_empty(stack: Stack, timeout: float = 30.0) -> None:
    from tests.faults.harness import counts

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counts(stack, "none")["outbox"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the api's outbox was not published")


def test_replay_changes_nothing_already_right(proxied: tuple[Stack, CuttableProxy]) -> None:
    """opspor-replay of both topics on a healthy system: no new concern, no new mail."""
    stack, _ = proxied
    started = time.monotonic()
    workload = Workload("replay", CONCERNED, QUIET)
    workload.post(stack)
    first = figures(
        stack,
        workload,
        "replay",
        crashes=0,
        crashes_while_sending=0,
        unavailable=0,
        started=started,
    )
    first.check()
    script = Path(sys.executable).with_name("opspor-replay")
    env = {**os.environ, "DATABASE_URL": stack.database_url}
    for what in ("registrations", "concerns"):
        done = subprocess.run(
            [str(script), what], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert int(done.stdout.split()[1]) > 0
    time.sleep(3)  # the relays publish, the consumers apply
    again = figures(
        stack,
        workload,
        "opspor-replay on a healthy system",
        crashes=0,
        crashes_while_sending=0,
        unavailable=0,
        started=started,
    )
    RESULTS.append(again)
    again.check()
    assert (again.stored, again.concerns, again.mails) == (
        first.stored,
        first.concerns,
        first.mails,
    )
