"""Seals every stored webhook secret with the first key of WEBHOOK_SECRET_KEYS:

    DATABASE_URL=... WEBHOOK_SECRET_KEYS=new,old python -m opspor_api.reseal

Run it after setting WEBHOOK_SECRET_KEYS for the first time (secrets stored before are kept as
given until then), and after putting a new key first; then the old key can be dropped from the
setting (README "Webhooks"). One transaction: every secret is resealed, or none. Exit code 1
names the endpoints whose secret no key opens (their secret must be PUT again).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from opspor_api.webhooks import service
from opspor_api.webhooks.repository import WebhookRepository
from opspor_shared.db import make_engine, make_sessionmaker, unit_of_work
from opspor_shared.secretbox import SecretBox, key_list, keys_problem


class _Unreadable(Exception):
    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(", ".join(endpoints))
        self.endpoints = endpoints


async def reseal(database_url: str, box: SecretBox) -> tuple[int, list[str]]:
    """(secrets resealed, endpoints whose secret no key opens); with any of the latter, nothing
    is changed."""
    engine = make_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            resealed, unreadable = await service.reseal(WebhookRepository(session), box)
            if unreadable:
                raise _Unreadable(unreadable)  # rolls the transaction back
        return resealed, []
    except _Unreadable as exc:
        return 0, exc.endpoints
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    del argv  # no options
    url = os.environ.get("DATABASE_URL")
    keys = key_list(os.environ.get("WEBHOOK_SECRET_KEYS"))
    if not url or not keys:
        sys.exit("opspor_api.reseal: set DATABASE_URL (the api's) and WEBHOOK_SECRET_KEYS")
    if (problem := keys_problem(keys)) is not None:
        sys.exit(f"opspor_api.reseal: WEBHOOK_SECRET_KEYS {problem}")
    resealed, unreadable = asyncio.run(reseal(url, SecretBox(keys)))
    if unreadable:
        sys.exit(
            f"nothing was changed: no key opens the secret of {', '.join(unreadable)}; add its "
            "key to WEBHOOK_SECRET_KEYS, or PUT those webhooks again"
        )
    print(f"resealed {resealed} webhook secrets with the first key")


if __name__ == "__main__":
    main()
