from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import SkipValidation

from opspor_api.deps import Session, Settings
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.tenancy import MunicipalityAdmin
from opspor_api.validation import ID_PATTERN
from opspor_api.webhooks import service
from opspor_api.webhooks.repository import WebhookRepository
from opspor_api.webhooks.schemas import WebhookIn, WebhookOut

router = APIRouter(prefix="/v1", tags=["webhooks"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.put(
    "/municipalities/{municipality_id}/webhooks/{webhook_id}",
    response_model=WebhookOut,
    summary="Create or replace a webhook endpoint (the secret is never returned)",
)
async def put_webhook(
    municipality_id: PathId,
    webhook_id: PathId,
    # Checked in the service, so that schema and domain errors come back together.
    body: Annotated[WebhookIn, SkipValidation],
    _admin: MunicipalityAdmin,
    session: Session,
    settings: Settings,
    response: Response,
) -> WebhookOut:
    out, created = await service.put_webhook(
        WebhookRepository(session),
        municipality_id,
        webhook_id,
        body,
        settings.secret_box(),
        settings.webhook_allowed_networks,
    )
    response.status_code = 201 if created else 200
    return out


@router.get("/municipalities/{municipality_id}/webhooks", response_model=list[WebhookOut])
async def list_webhooks(
    municipality_id: PathId, _admin: MunicipalityAdmin, session: Session, settings: Settings
) -> list[WebhookOut]:
    return await service.list_webhooks(
        WebhookRepository(session), municipality_id, settings.secret_box()
    )


@router.get("/municipalities/{municipality_id}/webhooks/{webhook_id}", response_model=WebhookOut)
async def get_webhook(
    municipality_id: PathId,
    webhook_id: PathId,
    _admin: MunicipalityAdmin,
    session: Session,
    settings: Settings,
) -> WebhookOut:
    return await service.get_webhook(
        WebhookRepository(session), municipality_id, webhook_id, settings.secret_box()
    )


@router.delete("/municipalities/{municipality_id}/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(
    municipality_id: PathId, webhook_id: PathId, _admin: MunicipalityAdmin, session: Session
) -> None:
    await service.delete_webhook(WebhookRepository(session), municipality_id, webhook_id)
