"""The ``studio`` command: ``up`` runs the studio, ``rebuild`` replays a read model, ``ping``
asks a service whether it is alive."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import msgspec
import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from contracts import common
from services import supervisor
from services.kernel import natsauth
from services.kernel.bus import credentials
from services.kernel.settings import Settings

#: Services whose read model ``studio rebuild`` can replay, and where that model lives.
READ_MODELS = {
    "gateway": Path("gateway") / "readmodel.db",
    "datasets": Path("datasets") / "readmodel.db",
    "trainer": Path("trainer") / "readmodel.db",
    "exporter": Path("exporter") / "readmodel.db",
}


def _workspace(args: argparse.Namespace) -> Path:
    return Path(args.workspace or os.environ.get("STUDIO_WORKSPACE") or "workspace").resolve()


def _nats_url(workspace: Path) -> str | None:
    """STUDIO_NATS_URL, else the embedded server of a studio running on ``workspace``; as the
    embedded server's operator when the workspace holds its password."""
    if os.environ.get("STUDIO_NATS_URL"):
        return natsauth.tooling_url(os.environ["STUDIO_NATS_URL"], workspace)
    state = workspace / "run" / "studio.json"
    if state.exists():
        return natsauth.tooling_url(str(json.loads(state.read_text())["nats_url"]), workspace)
    return None


async def _request(
    url: str, subject: str, body: msgspec.Struct, timeout: float, user: str
) -> bytes | None:
    """Ask ``subject``; as the operator when ``url`` says so, else with ``user``'s credentials
    (``STUDIO_NATS_CREDS``: a service's container pings itself with its own)."""
    options = {} if "@" in url else credentials(Settings.from_env(), user)
    try:
        nc = await asyncio.wait_for(nats.connect(url.split(","), connect_timeout=2, **options), 5)
    except (TimeoutError, OSError):
        return None
    try:
        msg = await nc.request(subject, msgspec.json.encode(body), timeout=timeout)
        return bytes(msg.data)
    except (NoRespondersError, NatsTimeoutError, TimeoutError):
        return None
    finally:
        await nc.close()


def cmd_up(args: argparse.Namespace) -> int:
    if args.import_root:
        roots = [str(Path(r).expanduser().resolve()) for r in args.import_root]
        os.environ["STUDIO_IMPORT_ROOTS"] = os.pathsep.join(roots)
    return supervisor.up(args.host, args.port, _workspace(args))


def cmd_ping(args: argparse.Namespace) -> int:
    url = _nats_url(_workspace(args)) or "nats://127.0.0.1:4222"
    subject = common.health_subject(args.service)
    answer = asyncio.run(_request(url, subject, common.Ping(), 2.0, args.service))
    if answer is None:
        print(f"{args.service}: no answer", file=sys.stderr)
        return 1
    pong = msgspec.json.decode(answer, type=common.Pong)
    print(f"{args.service}: ok (instance {pong.instance})")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    workspace = _workspace(args)
    url = _nats_url(workspace)
    subject = common.rebuild_subject(args.service)
    rebuild = common.RebuildReadModel()
    answer = asyncio.run(_request(url, subject, rebuild, 600.0, args.service)) if url else None
    if answer is not None:
        reply = msgspec.json.decode(answer, type=common.ReadModelRebuilt | common.CommandRejected)
        if isinstance(reply, common.CommandRejected):
            print(f"rebuild failed: {reply.message}", file=sys.stderr)
            return 1
        print(f"{args.service}: read model rebuilt from {reply.events} events {reply.positions}")
        return 0
    # Not running: drop the file; the service replays every stream into a new one at start.
    path = workspace / READ_MODELS[args.service]
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    print(f"{args.service} is not running: its read model was dropped and is rebuilt at start")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="studio", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run NATS, every service and the gateway")
    up.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="port to serve on (8000)")
    up.add_argument("--workspace", help="data folder (./workspace)")
    up.add_argument(
        "--import-root",
        action="append",
        metavar="DIR",
        help="a server folder imports may read from (repeatable; STUDIO_IMPORT_ROOTS)",
    )
    up.set_defaults(func=cmd_up)
    rebuild = sub.add_parser("rebuild", help="drop a read model and rebuild it by replay")
    rebuild.add_argument("service", choices=sorted(READ_MODELS))
    rebuild.add_argument("--workspace")
    rebuild.set_defaults(func=cmd_rebuild)
    ping = sub.add_parser("ping", help="exit 0 if a service answers on NATS")
    ping.add_argument("service")
    ping.add_argument("--workspace")
    ping.set_defaults(func=cmd_ping)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except supervisor.StartupError as exc:
        print(f"studio: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
