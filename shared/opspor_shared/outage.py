"""Outages logged the way an operator reads them at night: once when they start, once when
they end (with their length), never once per retry.

Also holds the conditions that make /readyz answer 503 with a reason (lost topic data), so a
probe sees what the logs say.
"""

from __future__ import annotations

import time

from asyncpg.exceptions import PostgresConnectionError
from prometheus_client import Gauge
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from opspor_shared.logging import get_logger

log = get_logger(__name__)

DEPENDENCY_DOWN = Gauge(
    "opspor_dependency_down", "1 while a dependency is seen unreachable", ["dependency", "part"]
)


class Outage:
    """Tracks one dependency (database, kafka, smtp) as seen by one part of a process."""

    def __init__(self, dependency: str, part: str) -> None:
        self.dependency = dependency
        self.part = part
        self._since: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, reason: str) -> bool:
        """Counts a failure; logs (and returns True) only when this starts an outage."""
        self.failures += 1
        if self._since is not None:
            return False
        self._since = time.monotonic()
        DEPENDENCY_DOWN.labels(self.dependency, self.part).set(1)
        log.error("outage_started", dependency=self.dependency, part=self.part, reason=reason)
        return True

    def succeeded(self) -> None:
        if self._since is None:
            return
        seconds = round(time.monotonic() - self._since, 1)
        log.warning(
            "outage_ended",
            dependency=self.dependency,
            part=self.part,
            duration_seconds=seconds,
            failures=self.failures,
        )
        self._since = None
        self.failures = 0
        DEPENDENCY_DOWN.labels(self.dependency, self.part).set(0)


def is_database_outage(exc: BaseException) -> bool:
    """The database cannot be reached (refused, reset, timed out, shutting down, pool empty):
    an expected condition, logged without a traceback; anything else may be a bug."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, OSError | PoolTimeoutError | PostgresConnectionError)


# Reasons /readyz reports as not ready, keyed by what raised them (e.g. "consumer:<group>").
NOT_READY: dict[str, str] = {}


def set_not_ready(key: str, reason: str) -> None:
    NOT_READY[key] = reason


def clear_not_ready(key: str) -> None:
    NOT_READY.pop(key, None)
