from __future__ import annotations

import uvicorn

from opspor_api.app import create_app
from opspor_api.settings import ApiSettings
from opspor_shared.logging import configure_logging
from opspor_shared.runtime import tune_gc
from opspor_shared.settings import load_settings


def main() -> None:
    settings = load_settings(ApiSettings, "opspor-api")
    configure_logging("api", settings.log_level)
    tune_gc()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )
