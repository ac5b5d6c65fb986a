"""/healthz, /readyz and /metrics for every service.

The api mounts these routes on its own app; the worker and the alerter serve them from a small
uvicorn server that runs in the same event loop as their consumer. /healthz and /readyz are open
(orchestrators probe them without credentials); /metrics needs an operations token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from opspor_shared.access import (
    PROBLEM_JSON,
    PUBLIC_PATHS,
    allow,
    install_access_errors,
    require_access_rules,
)
from opspor_shared.auth import Role, TokenVerifier
from opspor_shared.db import database_ready
from opspor_shared.kafka import kafka_ready
from opspor_shared.outage import NOT_READY
from opspor_shared.settings import ServiceSettings

ReadinessCheck = Callable[[], Awaitable[bool]]

# Set on every /readyz probe (the orchestrator probes every few seconds); the job label of the
# scrape tells the services apart.
READY = Gauge(
    "opspor_ready", "1 when the last readiness probe found the dependency reachable", ["check"]
)


def readiness_checks(engine: AsyncEngine, settings: ServiceSettings) -> dict[str, ReadinessCheck]:
    """What /readyz checks in every service: the database answers and the broker bootstraps."""

    async def database() -> bool:
        return await database_ready(engine)

    async def kafka() -> bool:
        return await kafka_ready(settings)

    return {"database": database, "kafka": kafka}


def ops_router(checks: Callable[[], Mapping[str, ReadinessCheck]]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Dependencies (database, broker) are reachable",
        responses={503: {"description": "A dependency is not reachable (see `checks`)"}},
    )
    async def readyz() -> JSONResponse:
        named = dict(checks())
        results = await asyncio.gather(*(check() for check in named.values()))
        status = dict(zip(named, (bool(r) for r in results), strict=True))
        for name, up in status.items():
            READY.labels(name).set(1 if up else 0)
        # Conditions the loops found (lost topic data): reachable is not the same as sound.
        problems = sorted(NOT_READY.values())
        ok = all(status.values()) and not problems
        body: dict[str, object] = {"status": "ready" if ok else "not ready", "checks": status}
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics (operations role)",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            },
            401: {"description": "No valid bearer token", "content": {PROBLEM_JSON: {}}},
            403: {"description": "Not an operations token", "content": {PROBLEM_JSON: {}}},
            429: {"description": "Rate limit exceeded (api only)", "content": {PROBLEM_JSON: {}}},
            503: {"description": "Token keys could not be fetched", "content": {PROBLEM_JSON: {}}},
        },
        dependencies=[allow(Role.OPERATIONS)],
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def ops_app(
    service: str,
    checks: Callable[[], Mapping[str, ReadinessCheck]],
    verifier: TokenVerifier,
) -> FastAPI:
    app = FastAPI(
        title=f"opspor {service} operations", openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.verifier = verifier
    install_access_errors(app)
    app.include_router(ops_router(checks))
    require_access_rules(app, PUBLIC_PATHS)
    return app


class _QuietServer(uvicorn.Server):
    """The owning process handles SIGTERM/SIGINT itself and stops this server in turn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpsServer:
    """Runs an ops app inside the caller's event loop; port 0 picks a free port."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("ops server did not start")

    @property
    def port(self) -> int:
        sockets = self._server.servers[0].sockets
        port: int = sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
