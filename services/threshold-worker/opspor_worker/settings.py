from __future__ import annotations

from pydantic import Field

from opspor_shared.settings import ServiceSettings


class WorkerSettings(ServiceSettings):
    consumer_group: str = "opspor-threshold-worker"
    # How often the worker checks whether a school's day (horizon), calendar or pack changed.
    tick_seconds: float = Field(default=30.0, gt=0)
    tick_chunk_pupils: int = Field(default=500, ge=1)
