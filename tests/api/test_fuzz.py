"""Schemathesis against the OpenAPI document, in process (ASGI), authenticated: no request the
schema allows gets a 5xx, and every answer matches the documented schema.

Bounded and deterministic: a fixed number of examples per operation, derandomized, no example
database, so the run takes the same time and finds the same things every time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.settings import ApiSettings
from tests.api.conftest import api_settings
from tests.api.test_access import seed, token
from tests.auth import natural_role

EXAMPLES_PER_OPERATION = 25


def check_operation(operation: Any, statuses: list[int]) -> None:
    # A token of the role that uses the route, in municipality aalborg, school a1, so generated
    # requests get past authentication into the route's own validation and tenancy checks.
    headers = token(natural_role(operation.method.upper(), operation.path))

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        statuses.append(response.status_code)
        case.validate_response(
            response,
            checks=[not_a_server_error, response_schema_conformance],
            headers=headers,
        )

    run()


def fuzz(schema: schemathesis.schemas.BaseSchema, statuses: list[int]) -> list[str]:
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails here
        try:
            check_operation(operation, statuses)
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await seed(client, sessionmaker)
    # One client sends hundreds of requests here: a limit would only answer 429.
    unlimited = api_settings(
        settings.database_url,
        settings.kafka_bootstrap_servers,
        settings.registrations_topic.rsplit(".", 1)[-1],
        rate_limit_per_second=1e6,
        rate_limit_burst=1_000_000,
    )
    app = create_app(unlimited)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: list[int] = []
    try:
        failures = await asyncio.to_thread(fuzz, schema, statuses)
    finally:
        await asyncio.to_thread(shutdown_lifespans)
    assert not failures, "\n\n".join(failures)
    # The run reached the routes: authenticated successes and validation answers, not only 401s.
    assert len(statuses) >= 200
    assert {200, 404, 422} <= set(statuses) and 401 not in statuses
