"""``/health`` (NATS, every service, the read model) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import msgspec
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contracts import common
from contracts import datasets as d
from contracts import exports as x
from contracts import projects as p
from contracts import training as t
from services.gateway.access import visible_projects
from services.gateway.api.training import lease_holders
from services.gateway.auth.deps import CurrentUser
from services.gateway.envelope import REQUEST_ID, ErrorEnvelope
from services.gateway.gateway import Gateway, GatewayDep
from services.gateway.readmodels import training as read
from services.kernel.sqlite import session

router = APIRouter(tags=["system"])
api = APIRouter(tags=["system"])

PING_TIMEOUT_S = 2.0
_pong = msgspec.json.Decoder(common.Pong)


async def ping(gateway: Gateway, service: str) -> dict[str, Any]:
    try:
        msg = await gateway.broker.connection.request(
            common.health_subject(service),
            msgspec.json.encode(common.Ping()),
            timeout=PING_TIMEOUT_S,
        )
    except NoRespondersError:
        return {"ok": False, "error": "not running"}
    except (NatsTimeoutError, TimeoutError):
        return {"ok": False, "error": f"no answer within {PING_TIMEOUT_S:g}s"}
    pong = _pong.decode(msg.data)
    return {"ok": True, "instance": pong.instance, "metrics_url": pong.metrics_url}


async def read_model(gateway: Gateway) -> dict[str, Any]:
    """Per stream: how far the read model has applied it, and whether it can update now (a
    projector failing, stuck or stopped cannot: its readers would see stale data forever)."""
    health = gateway.runner.health()
    model: dict[str, Any] = {}
    for stream in (p.STREAM, d.STREAM, t.STREAM, x.STREAM):
        info = await gateway.js.stream_info(stream)
        position = gateway.runner.position(stream)
        errors = [h["error"] for h in health.values() if h["stream"] == stream and not h["ok"]]
        model[stream] = {
            "position": position,
            "lag": max(0, info.state.last_seq - position),
            "ok": not errors,
            "error": "; ".join(errors) or None,
        }
    return model


@router.get(
    "/health",
    responses={
        503: {
            "model": ErrorEnvelope,
            "description": "Something is down; the envelope's `data` says what, as for 200.",
        }
    },
)
async def health(gateway: GatewayDep) -> Response:
    """200 when NATS and every service answer and the read model can update, else 503 with
    what is wrong."""
    connected = gateway.broker.connection.is_connected
    services: dict[str, Any] = {"gateway": {"ok": True, "instance": gateway.settings.instance}}
    model: dict[str, Any] = {}
    if connected:
        names = gateway.settings.services
        answers = await asyncio.gather(*(ping(gateway, s) for s in names))
        services |= dict(zip(names, answers, strict=True))
        model = await read_model(gateway)
    else:
        services |= {
            s: {"ok": False, "error": "NATS is unreachable"} for s in gateway.settings.services
        }
    model_ok = all(m["ok"] for m in model.values())
    healthy = connected and model_ok and all(s["ok"] for s in services.values())
    data = {
        "nats": {"ok": connected, "server": _server(gateway)},
        "services": services,
        "read_model": model,
    }
    if healthy:
        return JSONResponse({"status": "ok", "data": data})
    down = [name for name, s in services.items() if not s["ok"]]
    down += [] if model_ok else ["read model"]
    down = down or ["nats"]
    body = {
        "status": "error",
        "error": {"code": common.UNAVAILABLE, "message": f"unavailable: {', '.join(down)}"},
        "data": data,
        "request_id": REQUEST_ID.get(),
    }
    return JSONResponse(body, status_code=503)


def _server(gateway: Gateway) -> str | None:
    url = gateway.broker.connection.connected_url
    return url.netloc if url else None


@api.get("/system")
async def system(gateway: GatewayDep, principal: CurrentUser) -> Response:
    """Every service, the device leases (who trains what where), the runs by status, workspace
    disk. A user who is not an admin sees the runs of their own projects only: the counts are
    theirs, and a lease held for another project's run does not name the run."""
    services = dict(
        zip(
            gateway.settings.services,
            await asyncio.gather(*(ping(gateway, s) for s in gateway.settings.services)),
            strict=True,
        )
    )
    disk = shutil.disk_usage(gateway.settings.workspace)
    async with session(gateway.engine) as db:
        counts = await read.run_counts(db, among=visible_projects(principal))
        leases = await lease_holders(gateway, db, principal)
    return JSONResponse(
        {
            "status": "ok",
            "data": {
                "services": services,
                "leases": leases,
                "runs": counts,
                "workspace": {
                    "path": str(gateway.settings.workspace),
                    "total": disk.total,
                    "used": disk.used,
                    "free": disk.free,
                },
            },
        }
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
