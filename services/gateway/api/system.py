"""``/health`` (NATS, every service, the read model) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from typing import Any

import msgspec
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import common
from contracts import datasets as d
from contracts import exports as x
from contracts import projects as p
from contracts import training as t
from services.gateway.access import viewable, visible_projects
from services.gateway.api.training import lease_holders
from services.gateway.auth.deps import CurrentUser
from services.gateway.auth.principal import Principal
from services.gateway.envelope import REQUEST_ID, ErrorEnvelope
from services.gateway.gateway import Gateway, GatewayDep
from services.gateway.readmodels import training as read
from services.kernel.gpu import NVML, register_gpu_collector
from services.kernel.sqlite import session
from services.kernel.telemetry import build_info

router = APIRouter(tags=["system"])
api = APIRouter(tags=["system"])

PING_TIMEOUT_S = 2.0
# The gateway's /metrics carries its build and this machine's GPUs (none without one).
build_info("gateway")
register_gpu_collector()
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
    data = await checks(gateway)
    services, model = data["services"], data["read_model"]
    model_ok = all(m["ok"] for m in model.values())
    healthy = data["nats"]["ok"] and model_ok and all(s["ok"] for s in services.values())
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


async def checks(gateway: Gateway) -> dict[str, Any]:
    """NATS, every service (the gateway first) and the read model, as ``/health`` says them."""
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
    return {
        "nats": {"ok": connected, "server": _server(gateway)},
        "services": services,
        "read_model": model,
    }


def _server(gateway: Gateway) -> str | None:
    url = gateway.broker.connection.connected_url
    return url.netloc if url else None


@api.get("/system")
async def system(gateway: GatewayDep, principal: CurrentUser) -> Response:
    """Every service and NATS (as ``/health`` says them), this machine's GPUs (``gpus``; none
    and ``gpus_reason`` on a machine without NVML), the device leases (who trains what where),
    the queue, the runs by status, workspace disk. A user who is not an admin sees the runs of
    their own projects only: the counts are theirs, and another project's run (in a lease or
    the queue) shows its status and place, never its id."""
    health, reading = await asyncio.gather(checks(gateway), asyncio.to_thread(NVML.read))
    disk = shutil.disk_usage(gateway.settings.workspace)
    async with session(gateway.engine) as db:
        counts = await read.run_counts(db, among=visible_projects(principal))
        leases = [_dated(h) for h in await lease_holders(gateway, db, principal)]
        queue = await _queue(db, principal)
    data = health | reading.public()
    data |= {"leases": leases, "queue": queue, "runs": counts}
    data["workspace"] = {
        "path": str(gateway.settings.workspace),
        "total": disk.total,
        "used": disk.used,
        "free": disk.free,
    }
    return JSONResponse({"status": "ok", "data": data})


def _dated(lease: dict[str, Any]) -> dict[str, Any]:
    """A lease with its times (seconds since the epoch) also as ISO 8601, as every other time."""
    return lease | {
        f"{name}_at": datetime.fromtimestamp(lease[name], UTC).isoformat()
        for name in ("since", "renewed")
        if isinstance(lease.get(name), int | float)
    }


async def _queue(db: AsyncSession, principal: Principal) -> dict[str, list[dict[str, Any]]]:
    """What runs and what waits, in order: whole to whoever may read the run's project, its
    status and place only to anyone else (as ``GET /training/queue`` shows them)."""
    running, waiting = await read.queue(db)
    shown = await viewable(db, principal)

    def entry(row: read.RunRow) -> dict[str, Any]:
        if shown is None or row.project_id in shown:
            return row.public() | {"visible": True}
        return {"id": None, "status": row.status, "visible": False}

    return {
        "running": [entry(r) for r in running],
        "queued": [entry(r) | {"position": i} for i, r in enumerate(waiting, start=1)],
    }


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    # In a thread: reading the GPUs blocks for milliseconds.
    body = await asyncio.to_thread(generate_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
