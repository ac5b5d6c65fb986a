"""/readyz reports conditions the loops found (lost topic data), not only reachability, and is
ready again when they clear."""

from __future__ import annotations

import httpx

from opspor_shared.auth import TokenVerifier
from opspor_shared.ops import ops_app
from opspor_shared.outage import clear_not_ready, set_not_ready
from tests.auth import issuers_setting


async def _reachable() -> bool:
    return True


async def test_readyz_is_503_with_the_reason_while_a_topic_is_reread() -> None:
    app = ops_app(
        "test",
        lambda: {"database": _reachable},
        TokenVerifier(issuers_setting(), leeway_seconds=30, jwks_timeout=5),
    )
    transport = httpx.ASGITransport(app=app)
    key = "consumer:test-group:test-topic"
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        assert (await client.get("/readyz")).status_code == 200
        set_not_ready(key, "test-topic lost data (offsets beyond the end); test-group re-reading")
        try:
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"] == {"database": True}
            assert r.json()["problems"] == [
                "test-topic lost data (offsets beyond the end); test-group re-reading"
            ]
        finally:
            clear_not_ready(key)
        assert (await client.get("/readyz")).status_code == 200
