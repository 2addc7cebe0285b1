"""Composition root of the gateway: NATS, the read model and its projection, the routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from nats.aio.msg import Msg

from contracts import datasets as d
from contracts import exports as x
from contracts import identity as i
from contracts import projects as p
from contracts import training as t
from services import deployment
from services.gateway import envelope, headers, limits, pages, tracing_http
from services.gateway.access_log import AccessLog
from services.gateway.api import (
    asyncapi,
    audit,
    dataset_export,
    datasets,
    evaluation,
    experiments,
    exports,
    hub,
    imports,
    legacy,
    members,
    projects,
    splits,
    system,
    tasks,
    training,
    training_sockets,
)
from services.gateway.auth import keys, routes, users
from services.gateway.auth.deps import current_principal
from services.gateway.gateway import Gateway
from services.gateway.idempotency import Idempotency, open_store
from services.gateway.live_clients import LiveClients
from services.gateway.pages.fragments import FragmentMiddleware
from services.gateway.readmodels import projectors
from services.gateway.uploads import sweep
from services.kernel.bus import connect, service_broker, stop_broker
from services.kernel.lease import Leases
from services.kernel.projection import ProjectionRunner
from services.kernel.service import answer_health, answer_rebuild
from services.kernel.settings import Settings
from services.kernel.sqlite import Reader, create_engine
from services.kernel.streams import StreamSpec, ensure_stream
from services.kernel.tracing import setup_tracing

log = logging.getLogger(__name__)
SERVICE = "gateway"
STREAMS = (
    StreamSpec(i.STREAM, (i.EVENTS,)),
    StreamSpec(p.STREAM, (p.EVENTS,)),
    StreamSpec(d.STREAM, (d.EVENTS,)),
    StreamSpec(t.STREAM, (t.EVENTS,)),
    StreamSpec(x.STREAM, (x.EVENTS,)),
)
READ_MODEL = "readmodel.db"
#: How long a starting gateway waits for its read model to apply what is stored.
STARTUP_CATCH_UP_S = 60.0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    setup_tracing(SERVICE, settings)
    broker = service_broker(settings, SERVICE)
    await connect(broker, settings.nats_url, settings.connect_timeout)
    js = broker.connection.jetstream()
    # The gateway may start before the services: their streams must exist to be read.
    for spec in STREAMS:
        await ensure_stream(js, spec, settings.stream_replicas)
    # Uploads a crashed gateway left half-received (an hour untouched: never a live one).
    await asyncio.to_thread(sweep, settings.data_dir("uploads"))
    engine = create_engine(settings.data_dir(SERVICE) / READ_MODEL)
    # The hot reads' lean route to the same file (services.kernel.sqlite.Reader).
    app.state.reader = Reader(settings.data_dir(SERVICE) / READ_MODEL)
    runner = ProjectionRunner(
        broker.connection,
        engine,
        projectors(),
        consumer_prefix=f"{SERVICE}-{settings.instance}",
    )
    await runner.start()
    idempotency = Idempotency(await open_store(js, settings.stream_replicas))
    # The gateway only reads leases for its pages: a NATS outage answers 503 within a
    # request's time rather than after the trainers' patient retries.
    leases = Leases(
        js,
        ttl=settings.lease_ttl,
        replicas=settings.stream_replicas,
        retry_for=settings.request_timeout,
    )
    await leases.open()
    gateway = app.state.gateway = Gateway(settings, broker, engine, runner, idempotency, leases)

    async def on_progress(msg: Msg) -> None:
        gateway.progress.put(msg.subject.rsplit(".", 1)[-1], msg.data)

    await broker.connection.subscribe(d.progress_subject("*"), cb=on_progress)
    answer_health(broker, SERVICE, settings, metrics_url=None)
    answer_rebuild(broker, SERVICE, runner)
    await broker.start()
    # A gateway whose read model is rebuilding (deleted, or new) does not answer before it shows
    # what is stored: a list answered empty in the meantime would be a lie (bounded wait).
    if not await gateway.current(STARTUP_CATCH_UP_S):
        log.warning("the read model is still catching up; answering as it is")
    try:
        yield
    finally:
        await runner.stop()
        await stop_broker(broker)
        app.state.reader.close()
        await engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or deployment.settings()
    docs = bool(settings.docs_enabled)  # never in production: Settings refuses it
    app = FastAPI(
        title="AI Studio",
        version="1",
        summary="Train vision models from a web page or a REST API.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        # Rates, page sizes and per-user caps, on every route (limits.py).
        dependencies=[Depends(limits.guard)],
        # One span per request, tracing_http's: FastAPI's own would be a second, beside it.
        telemetry={"tracing": False},
    )
    app.state.settings = settings
    _install_middleware(app, settings)
    _include_routers(app)
    if docs:  # the bus's AsyncAPI document, beside /docs
        app.include_router(asyncapi.router)
    # The pages: /, /login, /projects/... (after the envelope: page errors answer as pages).
    pages.install(app)
    return app


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    limits.install(app, settings)
    headers.install(app, settings)  # body cap, CORS
    # Inside the request-id layer: its lines carry the id. Metrics by route template too.
    app.add_middleware(AccessLog)
    app.add_middleware(LiveClients)  # open SSE streams and WebSockets, by kind
    # htmx asking an API route gets the same answer drawn as an HTML fragment.
    app.add_middleware(FragmentMiddleware, templates=pages.fragment_templates())
    # Last added is outermost: every answer, a 500 included, carries the request id.
    envelope.install(app)
    headers.install_outer(app, settings)  # security headers, even on a last-resort 500
    tracing_http.install(app)  # outermost: everything above logs inside the request's span


def _include_routers(app: FastAPI) -> None:
    # Signing in (and refreshing) is the only thing /api answers without credentials.
    signed_in = [Depends(current_principal)]
    app.include_router(routes.public, prefix="/api/v1")
    for router in SIGNED_IN_ROUTERS:
        app.include_router(router, prefix="/api/v1", dependencies=signed_in)
    # /api/... is an alias of the current version, after it: routes are matched in order, one
    # by one, and no path of a router starts with "v1" or a parameter, so a /api/v1 request
    # never matches an alias and need not be compared with any (that doubled its routing).
    app.include_router(routes.public, prefix="/api", include_in_schema=False)
    # The original documents' image paths take a file name or an id: before the aliases.
    app.include_router(
        legacy.by_name, prefix="/api", include_in_schema=False, dependencies=signed_in
    )
    for router in SIGNED_IN_ROUTERS:
        app.include_router(router, prefix="/api", include_in_schema=False, dependencies=signed_in)
    app.include_router(system.router)  # /health and /metrics: for probes and Prometheus
    # A WebSocket authenticates in its handler: it is accepted, then told why and closed (4401).
    app.include_router(training_sockets.router)
    app.include_router(hub.router)  # /ws/{client_id}: after /ws/experiments/{experiment_id}


#: Every router that needs credentials, in the order the OpenAPI schema lists them.
SIGNED_IN_ROUTERS = (
    routes.router,
    keys.router,
    users.router,
    projects.router,
    members.router,
    # Included one by one, never one router in another: FastAPI 0.165 matches an included
    # router's routes under their own paths, so the limits' per-route quotas and the metrics'
    # route labels would see "/import/local" instead of "/datasets/import/local".
    imports.router,  # /datasets/import/...: before /datasets/{project_id}/...
    datasets.router,
    dataset_export.router,  # /datasets/{project_id}/export: after the routes above
    splits.router,
    training.router,
    experiments.router,
    evaluation.router,
    exports.router,
    system.api,
    audit.router,
    tasks.router,
    legacy.documents,  # the original documents' paths, after the routes whose prefix they share
)
