"""The deployment's NATS users: what each service may publish and subscribe to, declared once.

Each service appends only to its own event stream, answers only its own commands and queries
(``cmd.<context>.>``, ``qry.<context>.>``) and its health, reads the streams it projects or
loads, and touches only its buckets. The gateway sends commands and queries and reads every
stream, but appends no event and creates no stream. The facts come from the contracts (stream
names, event subjects, contexts, buckets); ``services.kernel.natsauth`` turns them into
subjects, the embedded server's configuration (``studio up``, the test stacks) and clients'
connect options.

Event streams are created by their owner, or ahead of everyone by :func:`provision` with the
operator's credentials, so that a reader (the gateway) never needs to create one. ``provision``
also makes the Object Store buckets with the deployment's replicas: a service that finds a
bucket missing creates it with one replica, which on a cluster would put its files on one node.

``python -m services.bus_access --out DIR`` writes the users' seeds (mode 0600) and the
``authorization`` block for a server run by hand or a cluster (see ``deploy/README.md``).
Imports ``contracts`` and ``services.kernel`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import nats

from contracts import common
from contracts import datasets as d
from contracts import exports as x
from contracts import identity as i
from contracts import projects as p
from contracts import training as t
from services.kernel import natsauth
from services.kernel.artifacts import ensure_object_store
from services.kernel.lease import BUCKET as LEASES
from services.kernel.natsauth import Access, Bucket, BusUser
from services.kernel.streams import StreamSpec, ensure_stream

GATEWAY = "gateway"
#: The gateway's bucket of idempotency keys (``services.gateway.idempotency.BUCKET``).
IDEMPOTENCY = "studio_idempotency"
#: The trainers' announcements of their devices (``services.trainer.capacity.BUCKET``).
TRAINERS = "studio_trainers"
#: The leases of running imports (``services.datasets.importlease.BUCKET``).
IMPORT_LEASES = "studio_import_leases"
CONTEXTS: tuple[ModuleType, ...] = (i, p, d, t, x)


def _requests(context: ModuleType) -> tuple[str, ...]:
    """The command and query subjects of a context: ``cmd.<context>.>``, ``qry.<context>.>``."""
    return (f"cmd.{context.CONTEXT}.>", f"qry.{context.CONTEXT}.>")


def _service(
    name: str,
    context: ModuleType,
    *,
    reads: tuple[ModuleType, ...] = (),
    asks: tuple[ModuleType, ...] = (),
    sends: tuple[str, ...] = (),
    emits: tuple[str, ...] = (),
    buckets: tuple[Bucket, ...] = (),
) -> BusUser:
    """A service owning ``context``: its stream, its requests, its health; and what it uses."""
    return BusUser(
        name=name,
        owns=((context.STREAM, (context.EVENTS,)),),
        reads=tuple(c.STREAM for c in (context, *reads)),
        serves=(*_requests(context), common.health_subject(name), common.rebuild_subject(name)),
        # Its own health and rebuild too: ``studio ping`` in its container, with its credentials.
        asks=(
            *(f"qry.{c.CONTEXT}.>" for c in asks),
            *sends,
            common.health_subject(name),
            common.rebuild_subject(name),
        ),
        emits=emits,
        buckets=buckets,
    )


_ARTIFACTS_WRITE = Bucket(t.ARTIFACTS_BUCKET, "objects", write=True, create=True)
_ARTIFACTS_READ = Bucket(t.ARTIFACTS_BUCKET, "objects", create=True)
#: Uploaded ZIPs: the gateway puts them, the datasets service fetches and deletes them.
_UPLOADS = Bucket(d.UPLOADS_BUCKET, "objects", write=True, create=True)
_LIVE_DATASETS = d.progress_subject("*")
_LIVE_TRAINING = t.progress_subject("*")

SERVICES: tuple[BusUser, ...] = (
    _service("identity", i),
    _service("projects", p),
    _service(
        "datasets",
        d,
        reads=(p,),
        emits=(_LIVE_DATASETS,),
        buckets=(_UPLOADS, Bucket(IMPORT_LEASES, "kv", write=True, create=True)),
    ),
    _service(
        "trainer",
        t,
        asks=(d,),
        sends=(x.Subjects.REQUEST_EXPORT,),  # a promoted trial's export
        emits=(_LIVE_TRAINING,),
        buckets=(
            Bucket(LEASES, "kv", write=True, create=True),
            Bucket(TRAINERS, "kv", write=True, create=True),
            _ARTIFACTS_WRITE,
        ),
    ),
    _service(
        "exporter",
        x,
        reads=(t,),
        asks=(d,),
        buckets=(_ARTIFACTS_READ, Bucket(x.EXPORTS_BUCKET, "objects", write=True, create=True)),
    ),
)

GATEWAY_USER = BusUser(
    name=GATEWAY,
    reads=tuple(c.STREAM for c in CONTEXTS),
    serves=(common.health_subject(GATEWAY), common.rebuild_subject(GATEWAY)),
    asks=(*(s for c in CONTEXTS for s in _requests(c)), common.health_subject("*")),
    hears=(_LIVE_DATASETS, _LIVE_TRAINING),
    buckets=(
        Bucket(IDEMPOTENCY, "kv", write=True, create=True),
        Bucket(LEASES, "kv", create=True),
        Bucket(x.EXPORTS_BUCKET, "objects"),  # downloads: the exporter made it
        _UPLOADS,  # uploaded ZIPs handed to the datasets service
    ),
)

USERS: tuple[BusUser, ...] = (*SERVICES, GATEWAY_USER)

#: Every event stream of the deployment, as its owner creates it.
STREAMS: tuple[StreamSpec, ...] = tuple(
    StreamSpec(stream, subjects) for user in USERS for stream, subjects in user.owns
)


def access(workspace: Path) -> Access:
    """The users of an embedded server whose secrets live in ``workspace``."""
    return Access(natsauth.secrets_dir(workspace), USERS)


#: Every Object Store bucket of the deployment.
OBJECT_BUCKETS: tuple[str, ...] = (t.ARTIFACTS_BUCKET, d.UPLOADS_BUCKET, x.EXPORTS_BUCKET)


async def provision(url: str, replicas: int = 1, **options: object) -> None:
    """Create every event stream and Object Store bucket (idempotent), with ``replicas``,
    connected as ``url`` and ``options`` say (the operator): readers that start before a
    stream's owner then find it there, and every bucket is replicated as the streams are."""
    nc = await nats.connect(url.split(","), connect_timeout=5, **options)
    try:
        for spec in STREAMS:
            await ensure_stream(nc.jetstream(), spec, replicas)
        for bucket in OBJECT_BUCKETS:
            await ensure_object_store(nc.jetstream(), bucket, replicas)
    finally:
        await nc.close()


def provision_now(url: str, replicas: int = 1) -> None:
    """:func:`provision`, from synchronous code (an event loop may be running in this thread)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, provision(url, replicas)).result()


def main(argv: list[str] | None = None) -> int:
    """Make the users' secrets and the server's ``authorization`` block, or create the streams."""
    parser = argparse.ArgumentParser(prog="python -m services.bus_access", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    users = sub.add_parser("users", help="write one seed per user and authorization.conf")
    users.add_argument("--out", type=Path, required=True, help="folder for the secrets")
    streams = sub.add_parser("streams", help="create every event stream, as the operator")
    streams.add_argument("--url", required=True, help="nats://operator:PASSWORD@host:4222,...")
    streams.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "streams":
        asyncio.run(provision(args.url, args.replicas))
        print(f"event streams ready: {', '.join(s.name for s in STREAMS)}")
        print(f"object buckets ready: {', '.join(OBJECT_BUCKETS)}")
        return 0
    conf = args.out / "authorization.conf"
    conf.unlink(missing_ok=True)  # the users may have changed; the secrets are kept
    natsauth.write_secret(conf, Access(args.out, USERS).config().rstrip("\n"))
    print(f"wrote {conf}, and a seed per user in {args.out}: {', '.join(u.name for u in USERS)}")
    print(f"the operator's password is in {args.out / (natsauth.OPERATOR + '.password')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
