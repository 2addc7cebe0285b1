"""``python -m services.gateway``: serve the gateway (``STUDIO_HOST``, ``STUDIO_PORT``)."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from services import deployment
from services.gateway.app import SERVICE, create_app
from services.kernel.bus import NatsUnavailable, check_nats, credentials
from services.kernel.telemetry import setup_logging


def main() -> None:
    settings = deployment.settings()
    setup_logging("gateway", settings.log_level)
    try:
        options = credentials(settings, SERVICE)
        asyncio.run(check_nats(settings.nats_url, settings.connect_timeout, **options))
    except NatsUnavailable as exc:
        logging.getLogger("gateway").error("%s", exc)
        raise SystemExit(2) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # The client IP (anonymous rate limits) from the proxies one trusts only.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        access_log=False,
        # Open SSE streams would otherwise hold a shutdown forever.
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
