"""``python -m services.gateway``: serve the gateway (``STUDIO_HOST``, ``STUDIO_PORT``)."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from services import deployment
from services.gateway.app import SERVICE, create_app
from services.kernel.bus import NatsUnavailable, check_nats, credentials
from services.kernel.logs import setup_logging


def main() -> None:
    settings = deployment.settings()
    setup_logging("gateway", settings.log_level, settings.log_format)
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
        # One access line per request comes from the gateway's own middleware (access_log.py),
        # with the route and request id; uvicorn's lines go through the studio's log format.
        access_log=False,
        log_config=None,
        # Open SSE streams would otherwise hold a shutdown forever.
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
