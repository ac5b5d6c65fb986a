"""The reference of phase (a): the parse-only limit (issue 11).

A FastAPI endpoint at the api's path that parses and validates a batch body exactly as the api
does (opspor_api.bodies.parse with the api's own BatchIn: the same fields, bounds and national
id checks) and answers like the api, but stores nothing. Served by uvicorn with the api's own
settings (opspor_api.main), in a process of its own, so the bench drives both with the same
client and bodies and compares registrations per second in the same run.

    PORT=8123 .venv/bin/python -m tests.bench.parse_only
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI, Request

from opspor_api.bodies import parse, refuse
from opspor_api.registrations.schemas import BatchIn, IngestResult
from opspor_shared.runtime import tune_gc

app = FastAPI(title="parse-only reference")


@app.get("/healthz")
@app.get("/readyz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/registrations/batch", response_model=IngestResult)
async def batch(request: Request) -> IngestResult:
    body, errors = parse(BatchIn, await request.json())
    refuse(errors)
    assert body is not None
    return IngestResult(inserted=len(body.items), duplicates=0, duplicate_event_ids=[])


def main() -> None:
    tune_gc()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
