"""Phase (a): batch ingest throughput over HTTP, closed loop with N keep-alive connections.

Each connection posts the next pre-encoded body as soon as its previous response arrived, so
N is also the number of requests in flight. A batch counts as accepted only with HTTP 200 and
`inserted` equal to the batch size.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.bench.stats import summary

HEADERS = {"content-type": "application/json"}


@dataclass
class IngestRun:
    connections: int
    batches: int
    batch_size: int
    accepted_batches: int = 0
    accepted_registrations: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0

    def require_all_accepted(self, what: str) -> None:
        """Stops a phase at once when the api refused batches: nothing would ever catch up."""
        if self.failures:
            raise RuntimeError(
                f"{what}: {len(self.failures)} batches refused, e.g. {self.failures[:2]}"
            )

    def figures(self) -> dict[str, Any]:
        lat = summary(self.latencies_ms)
        return {
            "connections": self.connections,
            "batch_size": self.batch_size,
            "batches_sent": self.batches,
            "registrations_sent": self.batches * self.batch_size,
            "registrations_accepted": self.accepted_registrations,
            "failed_batches": len(self.failures),
            "failures_sample": self.failures[:5],
            "wall_seconds": round(self.wall_seconds, 3),
            "registrations_per_second": round(self.accepted_registrations / self.wall_seconds)
            if self.wall_seconds
            else 0,
            "batch_latency_ms": lat,
        }


async def warm_up(client: httpx.AsyncClient, connections: int) -> None:
    """Opens the pool's connections before the clock starts (cheap GETs, in parallel)."""
    await asyncio.gather(*(client.get("/healthz") for _ in range(connections)))


async def run_ingest(
    api_url: str,
    bodies: Sequence[bytes],
    batch_size: int,
    connections: int,
    timeout: float,
    *,
    single: bool = False,
    headers: dict[str, str] = HEADERS,
    sizes: Sequence[int] | None = None,
) -> IngestRun:
    """`single`: each body is one registration for POST /v1/registrations (expects 201).
    `sizes`: the registrations in each body, when not all hold `batch_size`."""
    path = "/v1/registrations" if single else "/v1/registrations/batch"
    want = 201 if single else 200
    run = IngestRun(connections=connections, batches=len(bodies), batch_size=batch_size)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=timeout) as client:
        await warm_up(client, connections)
        queue = iter(enumerate(bodies))

        async def lane() -> None:
            for index, body in queue:  # the shared iterator hands each body to exactly one lane
                expected = sizes[index] if sizes is not None else batch_size
                start = time.perf_counter()
                try:
                    r = await client.post(path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    run.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                run.latencies_ms.append((time.perf_counter() - start) * 1000)
                inserted = _inserted(r)
                if r.status_code == want and inserted == expected:
                    run.accepted_batches += 1
                    run.accepted_registrations += inserted
                else:
                    run.failures.append(f"HTTP {r.status_code} inserted={inserted}: {r.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(connections)))
        run.wall_seconds = time.perf_counter() - began
    return run


def _inserted(response: httpx.Response) -> int | None:
    try:
        value = json.loads(response.content).get("inserted")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None
