"""The api service: FastAPI app whose resources live in `lifespan`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import Histogram
from starlette.requests import Request

from opspor_api.audit.endpoints import router as audit_router
from opspor_api.cases import service as cases_service
from opspor_api.cases.endpoints import router as cases_router
from opspor_api.cases.repository import CaseRepository
from opspor_api.completeness import service as completeness_service
from opspor_api.completeness.endpoints import router as completeness_router
from opspor_api.completeness.repository import CompletenessRepository
from opspor_api.concerns import service as concerns_service
from opspor_api.concerns.endpoints import router as concerns_router
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.config.endpoints import router as config_router
from opspor_api.deadletters.endpoints import router as deadletters_router
from opspor_api.docs import ASSETS_URL, DOCS_URL, OAUTH2_REDIRECT_URL, REDOC_URL, install_docs
from opspor_api.enrolments.endpoints import router as enrolments_router
from opspor_api.errors import (
    PayloadTooLarge,
    TooManyRequests,
    install_error_handlers,
    problem_response,
)
from opspor_api.models import api_outbox
from opspor_api.packs.endpoints import router as packs_router
from opspor_api.purge import SERVICE as PURGE_SERVICE
from opspor_api.purge import purge_once
from opspor_api.ratelimit import RateLimiter
from opspor_api.registrations.endpoints import router as registrations_router
from opspor_api.replay import replay_cases, replay_registrations
from opspor_api.reports.endpoints import router as reports_router
from opspor_api.routing.endpoints import router as routing_router
from opspor_api.settings import ApiSettings
from opspor_api.web.endpoints import install_web
from opspor_api.web.security import SecurityHeaders, is_ui
from opspor_api.webhooks.endpoints import router as webhooks_router
from opspor_shared.access import (
    PUBLIC_PATHS,
    AccessError,
    principal_for,
    require_access_rules,
    token_verifier,
)
from opspor_shared.auth import TokenVerifier
from opspor_shared.clock import Clock, system_clock
from opspor_shared.db import make_engine, make_sessionmaker, unit_of_work
from opspor_shared.events import CloudEvent
from opspor_shared.kafka import Delivered
from opspor_shared.logging import correlation_id, get_logger, new_correlation_id
from opspor_shared.ops import ReadinessCheck, ops_router, readiness_checks
from opspor_shared.outage import Outage
from opspor_shared.reference import CalendarCache, PackCache
from opspor_shared.retention import retention_window
from opspor_shared.runtime import run_consumer, run_purge, run_relay, shutdown
from opspor_shared.stopping import sleep_or_stop

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimitAndCorrelation:
    """Refuses bodies over the limit (declared or streamed) and tags each request with a
    correlation id that travels on to Kafka and the other services' logs."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        cid = headers.get(b"x-correlation-id", b"").decode(errors="ignore")[:64]
        token = correlation_id.set(cid or new_correlation_id())
        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            received = 0

            async def limited() -> MutableMapping[str, Any]:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(f"the body exceeds {self.max_body_bytes} bytes")
                return message

            await self.app(scope, limited, send)
        finally:
            correlation_id.reset(token)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            PayloadTooLarge.title,
            PayloadTooLarge.type,
            f"the body exceeds {self.max_body_bytes} bytes; send batches of at most 5,000 items",
            Request(scope),
        )
        await response(scope, receive, send)


REQUEST_SECONDS = Histogram(
    "opspor_http_request_duration_seconds",
    "Time to answer an api request, by route template (never the raw path: it holds pupil ids)",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class MeasureRequests:
    """Observes every answer, refusals by the authentication and rate-limit layers included
    (their route is `unmatched`: they are answered before routing)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = route.path if isinstance(route, APIRoute) else "unmatched"
            REQUEST_SECONDS.labels(scope["method"], template, f"{status // 100}xx").observe(
                time.perf_counter() - started
            )


# The API description itself holds no data; integrators and the docs page need it unauthenticated.
DOCS_PATHS = frozenset({"/openapi.json", DOCS_URL, OAUTH2_REDIRECT_URL, REDOC_URL, ASSETS_URL})
OPEN_PATHS = PUBLIC_PATHS | DOCS_PATHS


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(ASSETS_URL + "/")


class AuthenticateAndLimit:
    """Verifies the bearer token and applies the client's rate limit before the route runs, so a
    refused request has read no body and stored nothing. Which roles may use a route is decided
    by the route's own allow(...) rule."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, limiter: RateLimiter) -> None:
        self.app = app
        self.verifier = verifier
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The web page (/ui) authenticates by its session cookie, page by page (opspor_api.web).
        if scope["type"] != "http" or is_open(scope["path"]) or is_ui(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            principal = await principal_for(scope, self.verifier)
        except AccessError as exc:
            await exc.response(scope["path"])(scope, receive, send)
            return
        wait = self.limiter.acquire(principal.rate_key)
        if wait:
            response = problem_response(
                429,
                TooManyRequests.title,
                TooManyRequests.type,
                f"more than {self.limiter.rate:g} requests per second; nothing was stored",
                Request(scope),
                headers={"Retry-After": str(wait)},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(settings: ApiSettings, *, clock: Clock = system_clock) -> FastAPI:
    """`clock` decides "today" for retention (the cutoff of accepted dates, the purge)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        sessionmaker = make_sessionmaker(engine)
        app.state.settings = settings
        app.state.sessionmaker = sessionmaker
        app.state.calendars = CalendarCache()
        app.state.packs = PackCache()
        app.state.clock = clock

        app.state.checks = readiness_checks(engine, settings)
        if not settings.secret_box().seals:
            log.warning(
                "webhook_secrets_not_encrypted",
                hint="set WEBHOOK_SECRET_KEYS on the api and the alerter (README: Webhooks)",
            )

        async def handle_concerns(batch: list[Delivered]) -> list[CloudEvent]:
            window = retention_window(settings, clock())
            async with unit_of_work(sessionmaker) as session:
                refused, applied = await concerns_service.project(
                    ConcernRepository(session), batch, window
                )
                # Cases open and follow in the same transaction as the read model.
                await cases_service.on_concerns(
                    CaseRepository(session, settings.cases_topic), applied, clock()
                )
                return refused

        async def check_cases(stop: asyncio.Event) -> None:
            """Judges overdue cases when the day changes, not only on writes."""
            while not stop.is_set():
                try:
                    async with unit_of_work(sessionmaker) as session:
                        await cases_service.check_overdue(
                            CaseRepository(session, settings.cases_topic), clock()
                        )
                except Exception as exc:
                    log.warning("case_check_failed", error=type(exc).__name__)
                await sleep_or_stop(stop, settings.case_check_seconds)

        async def replay_lost(topic: str) -> int:
            # A topic lost events this relay published (the outbox rows are gone once
            # published): queue every stored registration event again, which the worker applies
            # newest-wins, or every case's current state, whose events keep their ids; so
            # nothing changes twice.
            if topic == settings.registrations_topic:
                return await replay_registrations(sessionmaker, topic)
            if topic == settings.cases_topic:
                return await replay_cases(sessionmaker, topic)
            return 0

        async def watch_silent_schools(stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    async with unit_of_work(sessionmaker) as session:
                        found = await completeness_service.silent_school_days(
                            CompletenessRepository(session), app.state.calendars, clock()
                        )
                    completeness_service.publish_silent(found)
                except Exception as exc:
                    log.exception("silent_school_check_failed", error=type(exc).__name__)
                await sleep_or_stop(stop, settings.completeness_interval_seconds)

        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(watch_silent_schools(stop)),
            asyncio.create_task(check_cases(stop)),
            asyncio.create_task(
                run_relay(
                    settings,
                    sessionmaker,
                    api_outbox,
                    [settings.registrations_topic, settings.cases_topic],
                    stop,
                    "api-relay",
                    on_topic_lost=replay_lost,
                )
            ),
            asyncio.create_task(
                run_consumer(
                    settings,
                    settings.concern_consumer_group,
                    settings.concerns_topic,
                    handle_concerns,
                    stop,
                )
            ),
            asyncio.create_task(
                run_purge(
                    PURGE_SERVICE,
                    lambda stop: purge_once(engine, sessionmaker, settings, clock, stop=stop),
                    settings.purge_interval_seconds,
                    stop,
                )
            ),
        ]
        try:
            yield
        finally:
            stop.set()
            await shutdown(tasks)
            await engine.dispose()

    app = FastAPI(
        title="Opspor API",
        version="1.0.0",
        summary="Absence registrations in, concerns out.",
        description=(
            "School admin systems post absence registrations; frontend clients read concerns; "
            "municipalities configure schools and calendars. Errors are RFC 9457 problem "
            "documents. Concern events are documented in deploy/asyncapi.yaml."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    verifier = token_verifier(settings)
    app.state.verifier = verifier
    app.state.database_outage = Outage("database", "api")
    install_error_handlers(app)

    def checks() -> dict[str, ReadinessCheck]:
        named: dict[str, ReadinessCheck] = app.state.checks
        return named

    app.include_router(ops_router(checks))
    app.include_router(config_router)
    app.include_router(packs_router)
    app.include_router(registrations_router)
    app.include_router(enrolments_router)
    app.include_router(concerns_router)
    app.include_router(webhooks_router)
    app.include_router(reports_router)
    app.include_router(audit_router)
    app.include_router(completeness_router)
    app.include_router(cases_router)
    app.include_router(routing_router)
    app.include_router(deadletters_router)
    web_public = install_web(app, settings)
    require_access_rules(app, OPEN_PATHS | web_public)
    limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.state.limiter = limiter
    app.add_middleware(AuthenticateAndLimit, verifier=verifier, limiter=limiter)
    app.add_middleware(SecurityHeaders)
    # Added last, so it runs first: the correlation id is set before anything is logged.
    app.add_middleware(BodyLimitAndCorrelation, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MeasureRequests)
    return app
