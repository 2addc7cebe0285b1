"""The ``studio`` command: the users' commands of ``studio_client.cli`` (login, projects,
import, split, train, runs, eval, export, predict, tasks) and the operator's beside them:
``up`` runs the studio, ``rebuild`` replays a read model, ``ping`` asks a service whether it is
alive, ``gc`` collects stored images no event names (``cli_gc``). The operator's commands
import the services only when run, so that a user's command starts fast."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from services.cli_gc import gc
from studio_client.cli import build

if TYPE_CHECKING:
    import msgspec

#: Services whose read model ``studio rebuild`` can replay, and where that model lives.
READ_MODELS = {
    "gateway": Path("gateway") / "readmodel.db",
    "datasets": Path("datasets") / "readmodel.db",
    "trainer": Path("trainer") / "readmodel.db",
    "exporter": Path("exporter") / "readmodel.db",
}
WORKSPACE_HELP = "data folder (./workspace)"


def _workspace(workspace: str | None) -> Path:
    return Path(workspace or os.environ.get("STUDIO_WORKSPACE") or "workspace").resolve()


def _nats_url(workspace: Path) -> str | None:
    """STUDIO_NATS_URL, else the embedded server of a studio running on ``workspace``; as the
    embedded server's operator when the workspace holds its password."""
    from services.kernel import natsauth

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
    import msgspec
    import nats
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeoutError

    from services.kernel.bus import credentials
    from services.kernel.settings import Settings

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


@click.command(
    help="run NATS, every service and the gateway",
    epilog="\b\nExamples:\n  studio up\n  studio up --port 8080 --import-root /data/images",
)
@click.option("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
@click.option("--port", type=int, default=8000, help="port to serve on (8000)")
@click.option("--workspace", help=WORKSPACE_HELP)
@click.option(
    "--import-root",
    multiple=True,
    metavar="DIR",
    help="a server folder imports may read from (repeatable; STUDIO_IMPORT_ROOTS)",
)
def up(host: str, port: int, workspace: str | None, import_root: tuple[str, ...]) -> None:
    from services import supervisor

    if import_root:
        roots = [str(Path(r).expanduser().resolve()) for r in import_root]
        os.environ["STUDIO_IMPORT_ROOTS"] = os.pathsep.join(roots)
    try:
        code = supervisor.up(host, port, _workspace(workspace))
    except supervisor.StartupError as exc:
        print(f"studio: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


@click.command(
    help="exit 0 if a service answers on NATS",
    epilog="\b\nExample:\n  studio ping trainer --workspace ./workspace",
)
@click.argument("service")
@click.option("--workspace", help=WORKSPACE_HELP)
def ping(service: str, workspace: str | None) -> None:
    import msgspec

    from contracts import common

    url = _nats_url(_workspace(workspace)) or "nats://127.0.0.1:4222"
    subject = common.health_subject(service)
    answer = asyncio.run(_request(url, subject, common.Ping(), 2.0, service))
    if answer is None:
        print(f"{service}: no answer", file=sys.stderr)
        sys.exit(1)
    pong = msgspec.json.decode(answer, type=common.Pong)
    print(f"{service}: ok (instance {pong.instance})")
    sys.exit(0)


@click.command(
    help="drop a read model and rebuild it by replay",
    epilog="\b\nExample:\n  studio rebuild gateway",
)
@click.argument("service", type=click.Choice(sorted(READ_MODELS)))
@click.option("--workspace", help=WORKSPACE_HELP)
def rebuild(service: str, workspace: str | None) -> None:
    import msgspec

    from contracts import common

    folder = _workspace(workspace)
    url = _nats_url(folder)
    subject = common.rebuild_subject(service)
    command = common.RebuildReadModel()
    answer = asyncio.run(_request(url, subject, command, 600.0, service)) if url else None
    if answer is not None:
        reply = msgspec.json.decode(answer, type=common.ReadModelRebuilt | common.CommandRejected)
        if isinstance(reply, common.CommandRejected):
            print(f"rebuild failed: {reply.message}", file=sys.stderr)
            sys.exit(1)
        print(f"{service}: read model rebuilt from {reply.events} events {reply.positions}")
        sys.exit(0)
    # Not running: drop the file; the service replays every stream into a new one at start.
    path = folder / READ_MODELS[service]
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    print(f"{service} is not running: its read model was dropped and is rebuilt at start")
    sys.exit(0)


cli = build(up, ping, rebuild, gc)


def main(argv: list[str] | None = None) -> None:
    """``studio``: exits with the command's code (2 for a usage error or a failed start)."""
    cli.main(args=argv, prog_name="studio")


if __name__ == "__main__":
    main()
