"""Schemathesis against the OpenAPI document, as a municipality integrator would run it: the
`st` command against a served api, every phase (examples, coverage, fuzzing, stateful) and
every check, each request with a token of the role that uses its route. No failure allowed.

Bounded: a fixed seed, a few examples per operation and a time budget, so the run stays well
under two minutes on a small machine. The per-client rate limit is lifted for it (one client
sends thousands of requests; a limit would only answer 429).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.settings import ApiSettings
from opspor_shared.auth import Role
from opspor_shared.devstack.net import free_port
from tests.api.conftest import api_settings
from tests.api.test_access import seed, token

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 10
MAX_SECONDS = 35
TIMEOUT_SECONDS = 150


async def test_schemathesis_all_phases_and_checks_find_no_failure(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    await seed(client, sessionmaker)
    unlimited = api_settings(
        settings.database_url,
        settings.kafka_bootstrap_servers,
        settings.registrations_topic.rsplit(".", 1)[-1],
        rate_limit_per_second=1e6,
        rate_limit_burst=1_000_000,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(unlimited), host="127.0.0.1", port=port, log_config=None, access_log=False
        )
    )
    serving = asyncio.create_task(server.serve())
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({str(r): token(r)["Authorization"] for r in Role}))
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "st"),
            f"--config-file={Path(__file__).parent / 'schemathesis.toml'}",
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--phases=examples,coverage,fuzzing,stateful",
            "--checks=all",
            f"--max-examples={MAX_EXAMPLES}",
            f"--max-time={MAX_SECONDS}",
            "--seed=1",
            "--workers=1",
            "--suppress-health-check=all",
            "--no-color",
            f"--report-dir={tmp_path / 'report'}",
            "--report=har",
            f"--report-har-path={tmp_path / 'requests.har'}",
            cwd=tmp_path,  # schemathesis keeps a cache in its working directory
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.api.fuzz_hooks",
                "OPSPOR_FUZZ_TOKENS": str(tokens),
                "PYTHONPATH": str(ROOT),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    finally:
        server.should_exit = True
        await serving
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-20000:]
    # Every phase ran and reached the routes (a run that only met 401s would pass vacuously).
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in text, text[-20000:]
    # ... with requests that got past authentication into the routes (schemathesis's own
    # "authentication failed" warning also counts its deliberate no-token requests).
    entries = json.loads((tmp_path / "requests.har").read_text())["log"]["entries"]
    statuses = Counter(e["response"]["status"] for e in entries)
    assert {200, 404, 405, 422} <= set(statuses), statuses
    assert statuses[200] >= 10, statuses
