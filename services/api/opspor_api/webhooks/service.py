"""Webhook endpoints of a municipality: stored for the alerter, answered without the secret."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from opspor_api.bodies import parse, refuse, valid_fields
from opspor_api.errors import NotFound, field_error
from opspor_api.models import WebhookEndpoint
from opspor_api.webhooks.repository import WebhookRepository
from opspor_api.webhooks.schemas import WebhookIn, WebhookOut, secret_key
from opspor_shared.netguard import IPNetwork, refusal
from opspor_shared.secretbox import SEALED, SecretBox, SecretUnreadable

# The fingerprint of a secret that WEBHOOK_SECRET_KEYS cannot open (its key was removed).
UNREADABLE = "unreadable"


def fingerprint(secret: str) -> str:
    # Of the decoded key, so the same key written with or without padding looks the same.
    return "sha256:" + hashlib.sha256(secret_key(secret)).hexdigest()[:8]


def webhook_out(row: WebhookEndpoint, box: SecretBox) -> WebhookOut:
    parts = urlsplit(row.url)
    try:
        secret_fingerprint = fingerprint(box.open(row.secret))
    except SecretUnreadable:
        secret_fingerprint = UNREADABLE
    return WebhookOut(
        id=row.id,
        municipality_id=row.municipality_id,
        url=urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        url_query_redacted=bool(parts.query),
        secret_fingerprint=secret_fingerprint,
        secret_encrypted=row.secret.startswith(SEALED),
        levels=list(row.levels),
        school_ids=list(row.school_ids),
        enabled=row.enabled,
    )


async def _require_municipality(repo: WebhookRepository, municipality_id: str) -> None:
    if not await repo.municipality_exists(municipality_id):
        raise NotFound(f"no municipality {municipality_id!r}")


async def put_webhook(
    repo: WebhookRepository,
    municipality_id: str,
    webhook_id: str,
    raw: object,
    box: SecretBox,
    allowed_networks: Sequence[IPNetwork] = (),
) -> tuple[WebhookOut, bool]:
    """Checks the body against the schema and the domain at once (a bad secret, an internal
    URL and an unknown school are named in one answer), then stores it."""
    await _require_municipality(repo, municipality_id)
    data, errors = parse(WebhookIn, raw)
    fields = valid_fields(WebhookIn, raw, errors, (), ("url", "school_ids"))
    if (url := fields.get("url")) is not None:
        parts = urlsplit(url)
        # The schema has checked the URL's form, so it has a host and a valid port.
        why = await refusal(parts.hostname or "", parts.port or 443, allowed_networks)
        if why is not None:
            errors.append(field_error(("url",), f"the URL {why}"))
    school_ids = fields.get("school_ids", [])
    known = await repo.schools_of(municipality_id, school_ids)
    errors += [
        field_error(("school_ids", i), "no such school in this municipality")
        for i, school_id in enumerate(school_ids)
        if school_id not in known
    ]
    refuse(errors, "the webhook was not stored")
    assert data is not None
    values: dict[str, object] = {
        "municipality_id": municipality_id,
        "id": webhook_id,
        "url": data.url,
        "secret": box.seal(data.secret.get_secret_value()),
        "levels": sorted(set(data.levels)),
        "school_ids": sorted(set(data.school_ids)),
        "enabled": data.enabled,
    }
    created = await repo.upsert(values)
    row = WebhookEndpoint(**values)
    return webhook_out(row, box), created


async def get_webhook(
    repo: WebhookRepository, municipality_id: str, webhook_id: str, box: SecretBox
) -> WebhookOut:
    row = await repo.get(municipality_id, webhook_id)
    if row is None:
        raise NotFound(f"municipality {municipality_id!r} has no webhook {webhook_id!r}")
    return webhook_out(row, box)


async def list_webhooks(
    repo: WebhookRepository, municipality_id: str, box: SecretBox
) -> list[WebhookOut]:
    await _require_municipality(repo, municipality_id)
    return [webhook_out(row, box) for row in await repo.list(municipality_id)]


async def delete_webhook(repo: WebhookRepository, municipality_id: str, webhook_id: str) -> None:
    if not await repo.delete(municipality_id, webhook_id):
        raise NotFound(f"municipality {municipality_id!r} has no webhook {webhook_id!r}")


async def reseal(repo: WebhookRepository, box: SecretBox) -> tuple[int, list[str]]:
    """Seals every stored secret with the first key (secrets stored as given, or sealed with an
    older key); returns how many, and the endpoints (municipality/id) whose secret no key opens,
    which are left as they are."""
    resealed = 0
    unreadable: list[str] = []
    for row in await repo.every_endpoint():
        try:
            secret = box.open(row.secret)
        except SecretUnreadable:
            unreadable.append(f"{row.municipality_id}/{row.id}")
            continue
        await repo.set_secret(row.municipality_id, row.id, box.seal(secret))
        resealed += 1
    return resealed, unreadable
