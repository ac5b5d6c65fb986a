"""`make run`: the API port it picks is one that is actually free, and FRESH=1 starts from an
empty database and empty var state."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import pytest

from opspor_shared.auth import Role, TokenVerifier
from opspor_shared.devstack.issuer import LocalIssuer
from opspor_shared.devstack.net import choose_port, free_port, port_free
from opspor_shared.devstack.postgres import admin_url, create_database, drop_database
from opspor_shared.devstack.run import FRESH_DIRS, _tokens, fresh_start
from opspor_shared.devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


def _listen(stack: ExitStack, port: int) -> None:
    s = stack.enter_context(socket.socket())
    s.bind(("127.0.0.1", port))
    s.listen()


@pytest.fixture
def two_taken_ports() -> Iterator[int]:
    """A port p with p and p + 1 both held by listening sockets."""
    for _ in range(50):
        port = free_port()
        if port < 65000 and port_free("127.0.0.1", port + 1):
            with ExitStack() as stack:
                try:
                    _listen(stack, port)
                    _listen(stack, port + 1)
                except OSError:
                    continue
                yield port
                return
    pytest.fail("found no two adjacent free ports in 50 tries")


def test_a_busy_port_falls_back_to_a_port_that_is_free_not_blindly_to_the_next(
    two_taken_ports: int,
) -> None:
    port = two_taken_ports
    assert not port_free("127.0.0.1", port) and not port_free("127.0.0.1", port + 1)
    chosen = choose_port(port)
    assert chosen not in (port, port + 1)
    assert port_free("127.0.0.1", chosen)
    # A free preferred port is kept.
    wanted = free_port()
    assert choose_port(wanted) == wanted


def test_fresh_start_clears_var_state_but_keeps_the_embedded_server_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*FRESH_DIRS, "pgdata"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "old").write_text("from an earlier run")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert fresh_start(tmp_path, "opspor") is True  # the dev database is recreated
    for name in FRESH_DIRS:
        assert not (tmp_path / name).exists()
    assert (tmp_path / "pgdata" / "old").exists()
    # A database someone gave through DATABASE_URL is never dropped.
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/theirs")
    assert fresh_start(tmp_path, "opspor") is False


async def test_recreating_the_dev_database_empties_it() -> None:
    admin = admin_url(ROOT / "var")
    name = f"opspor_fresh_test_{os.getpid()}"
    url = await create_database(admin, name, recreate=True)
    try:
        conn = await asyncpg.connect(url)
        await conn.execute("create table leftover (id int)")
        await conn.close()
        # Without FRESH the data stays ...
        url = await create_database(admin, name, recreate=False)
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("select to_regclass('leftover') is not null")
        await conn.close()
        # ... with it the database starts empty.
        url = await create_database(admin, name, recreate=True)
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("select to_regclass('leftover') is null")
        await conn.close()
    finally:
        await drop_database(admin, name)


async def test_make_run_prints_bare_tokens_that_verify_and_says_where_they_go(
    tmp_path: Path,
) -> None:
    stack = Stack(var_dir=tmp_path)
    stack.issuer = LocalIssuer(tmp_path / "auth")
    text = _tokens(stack)
    assert "Authorize" in text and "Authorization: Bearer $TOKEN" in text
    printed = [line.split()[-1] for line in text.splitlines() if " of aalborg" in line]
    assert len(printed) == 2
    verifier = TokenVerifier([stack.issuer.config], leeway_seconds=0, jwks_timeout=1)
    roles = set()
    for token in printed:
        assert not token.lower().startswith("bearer")
        roles.add((await verifier.verify(token)).role)
    assert roles == {Role.MUNICIPALITY_ADMIN, Role.SCHOOL_SYSTEM}
