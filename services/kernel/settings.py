"""One settings object, read from ``STUDIO_*`` environment variables.

Only what the environment says: no service or context is named here (the deployment's list of
services comes from its composition root). Imports the standard library only.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def _bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def _int(name: str, default: int) -> int:
    value = _float(name, default)
    if value != int(value):
        raise SystemExit(f"{name} must be a whole number, got {value}")
    return int(value)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where the studio finds NATS and its workspace, and how patient it is."""

    nats_url: str = "nats://127.0.0.1:4222"
    workspace: Path = Path("workspace")
    #: Replicas of each event stream: 1 on one machine, 3 on a 3-node NATS cluster.
    stream_replicas: int = 1
    #: How long a process waits for NATS at start before it gives up with a message.
    connect_timeout: float = 10.0
    #: How long the gateway waits for a service's reply before answering 503.
    request_timeout: float = 5.0
    #: How long the gateway keeps resending a command while its service has no responder (a
    #: restart) before answering 503.
    responder_wait: float = 5.0
    #: How long the gateway waits for its read model to show a command's result.
    read_your_writes_timeout: float = 5.0
    #: Names this process among several instances of one service (durable consumer names).
    instance: str = field(default_factory=socket.gethostname)
    #: Port of a service's Prometheus endpoint; 0 picks a free one, -1 turns it off.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: Server folders that imports may read from (``STUDIO_IMPORT_ROOTS``, os.pathsep-separated).
    import_roots: tuple[Path, ...] = ()
    #: The largest ZIP upload accepted, in bytes.
    upload_max_bytes: int = 2 * 1024**3
    #: Seconds a device lease outlives its trainer's last heartbeat.
    lease_ttl: float = 10.0
    #: The services this deployment runs, which the gateway's health reports on: the kernel
    #: knows no service names, so the composition root supplies them (``services.deployment``).
    services: tuple[str, ...] = ()
    #: Whether a run that a crash interrupted (not one a user stopped) goes back to the queue by
    #: itself, to continue from its last stored epoch when a device is free.
    auto_resume: bool = True

    @classmethod
    def from_env(cls, default_services: tuple[str, ...] = ()) -> Settings:
        """The settings the environment gives; ``STUDIO_SERVICES`` (comma-separated) names the
        deployment's services, ``default_services`` when it is unset or empty."""
        env = os.environ
        return cls(
            nats_url=env.get("STUDIO_NATS_URL") or cls.nats_url,
            workspace=Path(env.get("STUDIO_WORKSPACE") or "workspace").resolve(),
            stream_replicas=_int("STUDIO_STREAM_REPLICAS", 1),
            connect_timeout=_float("STUDIO_NATS_CONNECT_TIMEOUT", 10.0),
            request_timeout=_float("STUDIO_REQUEST_TIMEOUT", 5.0),
            responder_wait=_float("STUDIO_RESPONDER_WAIT", 5.0),
            read_your_writes_timeout=_float("STUDIO_READ_YOUR_WRITES_TIMEOUT", 5.0),
            instance=env.get("STUDIO_INSTANCE") or socket.gethostname(),
            metrics_port=_int("STUDIO_METRICS_PORT", 0),
            metrics_host=env.get("STUDIO_METRICS_HOST") or "127.0.0.1",
            import_roots=tuple(
                Path(p).expanduser().resolve()
                for p in (env.get("STUDIO_IMPORT_ROOTS") or "").split(os.pathsep)
                if p.strip()
            ),
            upload_max_bytes=_int("STUDIO_UPLOAD_MAX_BYTES", 2 * 1024**3),
            lease_ttl=_float("STUDIO_LEASE_TTL", 10.0),
            services=tuple(
                s.strip()
                for s in (env.get("STUDIO_SERVICES") or ",".join(default_services)).split(",")
                if s.strip()
            ),
            auto_resume=_bool("STUDIO_AUTO_RESUME", True),
        )

    def data_dir(self, service: str) -> Path:
        """The folder a service keeps its read model and files in, created on first use."""
        path = self.workspace / service
        path.mkdir(parents=True, exist_ok=True)
        return path
