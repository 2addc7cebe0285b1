"""``python -m services.gateway``: serve the gateway (``STUDIO_HOST``, ``STUDIO_PORT``)."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from services import deployment
from services.gateway.app import create_app
from services.kernel.bus import NatsUnavailable, check_nats
from services.kernel.telemetry import setup_logging


def main() -> None:
    settings = deployment.settings()
    setup_logging("gateway", settings.log_level)
    try:
        asyncio.run(check_nats(settings.nats_url, settings.connect_timeout))
    except NatsUnavailable as exc:
        logging.getLogger("gateway").error("%s", exc)
        raise SystemExit(2) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        # Open SSE streams would otherwise hold a shutdown forever.
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
