"""One settings object, read from ``STUDIO_*`` environment variables and a ``.env`` file.

Only what the environment says: no service or context is named here (the deployment's list of
services comes from its composition root). Every field is typed and documented; the README's
settings table lists them with their variables and defaults. A bad value stops the process with
a message naming its variable; ``STUDIO_ENV=production`` also refuses what is only safe on a
developer's machine (a placeholder secret, the API docs, a bind beyond loopback without TLS in
front). Imports pydantic, pydantic-settings, ``limits`` (to check rate-limit strings) and the
standard library.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import limits
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PREFIX = "STUDIO_"
#: Values of ``STUDIO_JWT_SECRET`` seen in examples and tutorials: never a real secret.
PLACEHOLDERS = frozenset(
    {"changeme", "change-me", "change_me", "changethis", "secret", "jwt-secret", "your-secret",
     "placeholder", "password", "dev", "development", "test", "example", "please-change-me"}
)  # fmt: skip
#: First-admin passwords tutorials use: production refuses them too.
WEAK_PASSWORDS = frozenset({"admin", "administrator", "admin123", "12345678", "password1"})
#: The shortest secret production accepts (a generated one has 64 characters).
SECRET_MIN = 32
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
#: The variables whose names are not ``STUDIO_`` + the field's name.
ALIASES = {"connect_timeout": "STUDIO_NATS_CONNECT_TIMEOUT", "slot": "STUDIO_TRAINER_SLOT"}
RateLimit = Annotated[str, Field(min_length=1)]


class Settings(BaseSettings):
    """Where the studio finds NATS and its workspace, how patient it is, and what it allows."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    # -- where things are ------------------------------------------------------------------
    #: The NATS server (``nats://`` or ``tls://``); ``studio up`` starts one when unset.
    nats_url: str = "nats://127.0.0.1:4222"
    #: This process's NATS credentials for a ``STUDIO_NATS_URL`` deployment: an nkey seed file, a
    #: ``.creds`` file (user JWT + seed), or a folder of ``<service>.nk``/``.creds`` files.
    nats_creds: Path | None = None
    #: The folder of read models, files, generated secrets and credentials.
    workspace: Path = Path("workspace")
    #: Server folders that imports may read from (``os.pathsep``-separated).
    import_roots: Annotated[tuple[Path, ...], NoDecode] = ()
    #: The services this deployment runs, which the gateway's health reports on (comma-separated):
    #: the kernel knows no service names, so the composition root supplies the default.
    services: Annotated[tuple[str, ...], NoDecode] = ()
    #: Names this process among several instances of one service (durable consumer names).
    instance: str = Field(default_factory=socket.gethostname)
    #: Replicas of each event stream: 1 on one machine, 3 on a 3-node NATS cluster.
    stream_replicas: int = Field(1, ge=1, le=5)

    # -- patience --------------------------------------------------------------------------
    #: How long a process waits for NATS at start before it gives up with a message.
    connect_timeout: float = Field(10.0, gt=0, validation_alias=ALIASES["connect_timeout"])
    #: How long the gateway waits for a service's reply before answering 503.
    request_timeout: float = Field(5.0, gt=0)
    #: How long the gateway keeps resending a command while its service has no responder (a
    #: restart) before answering 503.
    responder_wait: float = Field(5.0, ge=0)
    #: How long the gateway waits for its read model to show a command's result.
    read_your_writes_timeout: float = Field(5.0, ge=0)
    #: Seconds a device lease outlives its trainer's last heartbeat.
    lease_ttl: float = Field(10.0, gt=0)
    #: Whether a run that a crash interrupted (not one a user stopped) goes back to the queue by
    #: itself, to continue from its last stored epoch when a device is free.
    auto_resume: bool = True

    # -- processes -------------------------------------------------------------------------
    #: The address the gateway listens on; beyond loopback, production needs TLS in front.
    host: str = "127.0.0.1"
    #: The port the gateway listens on.
    port: int = Field(8000, ge=0, le=65535)
    #: The log level of every process (debug, info, warning, error).
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    #: Log lines as JSON objects, or as text for people; auto: text on a terminal, else JSON.
    log_format: Literal["auto", "json", "text"] = "auto"
    #: Port of a service's Prometheus endpoint; 0 picks a free one, -1 turns it off.
    metrics_port: int = Field(0, ge=-1, le=65535)
    #: The address a service's Prometheus endpoint listens on.
    metrics_host: str = "127.0.0.1"
    #: The accelerator a worker process trains on: auto, cpu, cuda, cuda:N or mps.
    device: str = "auto"
    #: Names this machine's device lease explicitly (``STUDIO_TRAINER_SLOT``); else host-device.
    slot: str | None = Field(None, validation_alias=ALIASES["slot"])
    #: Devices a trainer lends to runs (``STUDIO_TRAINER_DEVICES``): every GPU by default, else
    #: one; on a CPU, how many CPU "devices" (processes) one run may train on at once.
    trainer_devices: int | None = Field(None, ge=1, le=64)
    #: Test-only fault injection, ``POINT:EPOCH`` (comma-separated): see the trainer's faults.
    fault_point: str = ""

    # -- security --------------------------------------------------------------------------
    #: development or production; production refuses settings only safe on one's own machine.
    env: Literal["development", "production"] = "development"
    #: Signs access tokens (HS256); generated into ``<workspace>/secrets/jwt.key`` when unset.
    jwt_secret: str = Field("", repr=False)
    #: Minutes an access token lives.
    access_token_minutes: int = Field(30, ge=1, le=24 * 60)
    #: Days a refresh token lives.
    refresh_token_days: int = Field(14, ge=1, le=365)
    #: Seconds a stream token (``?access_token=`` of SSE and WebSockets) lives.
    stream_token_seconds: int = Field(120, ge=10, le=3600)
    #: The first admin's password; ``studio up`` generates and prints one when unset.
    admin_password: str | None = Field(None, repr=False)
    #: The identity service's sealing key file; generated in its data folder when unset.
    identity_key_file: Path | None = None
    #: Whether a TLS-terminating proxy is in front of the gateway (allows a public bind).
    tls_terminated: bool = False
    #: The proxies whose ``X-Forwarded-For``/``-Proto`` the gateway believes (comma-separated
    #: addresses, ``*`` for any): the client IP that anonymous rate limits count by.
    forwarded_allow_ips: str = "127.0.0.1"
    #: Serves /docs, /redoc and /openapi.json; default on in development, off in production.
    docs_enabled: bool | None = None
    #: Origins allowed to call the API from a browser (comma-separated); none by default.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    # -- limits ----------------------------------------------------------------------------
    #: Requests per minute of a signed-in user of the free tier, in the ``limits`` notation
    #: (``10/minute``, ``100 per hour``, ``5/second;100/day``), as every rate here.
    rate_limit_free: RateLimit = "10/minute"
    #: Requests of a user of the basic tier.
    rate_limit_basic: RateLimit = "100/minute"
    #: Requests of a user of the premium tier (the first admin is one).
    rate_limit_premium: RateLimit = "1000/minute"
    #: Requests without a valid credential, per client IP.
    rate_limit_anonymous: RateLimit = "60/minute"
    #: Sign-in attempts per client IP and username.
    login_rate_limit: RateLimit = "5/minute"
    #: The largest request body accepted, in bytes (uploads have their own cap).
    max_body_bytes: int = Field(1024**2, ge=1024)
    #: The largest ZIP upload accepted, in bytes.
    upload_max_bytes: int = Field(2 * 1024**3, ge=1)
    #: The most items one page of a list may ask for (``?limit=``): an operator may lower it
    #: below each route's own maximum (500 for lists, 1000 for a confusion-matrix cell), never
    #: raise it past them, so by default every route keeps the maximum it documents.
    page_size_max: int = Field(1000, ge=1, le=1000)
    #: Open SSE streams and WebSockets per user (per IP when anonymous).
    streams_per_user: int = Field(20, ge=1)
    #: Imports one user may have running at once.
    imports_per_user: int = Field(3, ge=1)
    #: Training runs one user may have queued (not yet started) at once.
    queued_runs_per_user: int = Field(10, ge=1)

    #: The file the JWT secret was read from (None when the environment gave it).
    _secret_file: Path | None = PrivateAttr(None)

    @field_validator("workspace", "nats_creds", "identity_key_file", mode="after")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return None if path is None else path.expanduser().resolve()

    @field_validator("import_roots", mode="before")
    @classmethod
    def _paths(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())
        return raw

    @field_validator("services", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return tuple(s.strip() for s in raw.split(",") if s.strip())
        return raw

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, raw: str) -> str:
        for server in raw.split(","):
            check_nats_server(server.strip())
        return raw

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, raw: Any) -> Any:
        return raw.strip().lower() if isinstance(raw, str) else raw

    @field_validator(
        "rate_limit_free",
        "rate_limit_basic",
        "rate_limit_premium",
        "rate_limit_anonymous",
        "login_rate_limit",
    )
    @classmethod
    def _rate(cls, raw: str) -> str:
        try:
            limits.parse_many(raw)
        except ValueError:
            raise ValueError("must read like 10/minute or 100 per hour") from None
        return raw

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        # Fields derived from others: set once, while the object is still being built.
        if self.docs_enabled is None:
            object.__setattr__(self, "docs_enabled", self.env == "development")
        if not self.jwt_secret:
            self._secret_file = self.secrets_dir / "jwt.key"
            object.__setattr__(self, "jwt_secret", secret_file(self._secret_file))
        if self.env == "production":
            refusals = self.production_refusals()
            if refusals:
                raise ValueError(
                    "STUDIO_ENV=production refuses to start:\n  - " + "\n  - ".join(refusals)
                )
        return self

    @property
    def secrets_dir(self) -> Path:
        """Where generated secrets live: ``<workspace>/secrets``, readable by its owner only."""
        return self.workspace / "secrets"

    @property
    def rate_limits(self) -> dict[str, str]:
        """The request limit of each tier, and ``anonymous`` (per client IP)."""
        return {
            "free": self.rate_limit_free,
            "basic": self.rate_limit_basic,
            "premium": self.rate_limit_premium,
            "anonymous": self.rate_limit_anonymous,
        }

    def production_refusals(self) -> list[str]:
        """What makes these settings unsafe to serve the world with (empty when none)."""
        refusals = []
        secret = self.jwt_secret
        if secret.strip().lower() in PLACEHOLDERS or len(secret) < SECRET_MIN:
            refusals.append(
                f"STUDIO_JWT_SECRET is a placeholder or shorter than {SECRET_MIN} characters"
                " (unset it to have one generated into the workspace)"
            )
        password = (self.admin_password or "").strip().lower()
        if password and (password in PLACEHOLDERS or password in WEAK_PASSWORDS):
            refusals.append(
                "STUDIO_ADMIN_PASSWORD is a placeholder (unset it to have one generated)"
            )
        if self.docs_enabled:
            refusals.append("STUDIO_DOCS_ENABLED=1 exposes the API docs (set it to 0)")
        if not is_loopback(self.host) and not self.tls_terminated:
            refusals.append(
                f"STUDIO_HOST={self.host} listens beyond loopback without TLS: put a"
                " TLS-terminating proxy in front (deploy/reverse-proxy) and set"
                " STUDIO_TLS_TERMINATED=1"
            )
        key = self._secret_file
        if key is not None and key.stat().st_mode & 0o077:
            refusals.append(f"{key} is readable by others (chmod 600 it)")
        return refusals

    @classmethod
    def from_env(
        cls, default_services: tuple[str, ...] = (), env_file: str | Path | None = ".env"
    ) -> Settings:
        """The settings the environment (and ``env_file``) gives; ``STUDIO_SERVICES``
        (comma-separated) names the deployment's services, ``default_services`` when it is
        unset or empty. A bad value ends the process with a message naming its variable."""
        try:
            settings = cls(_env_file=env_file)
        except ValidationError as exc:
            raise SystemExit(explain(exc)) from None
        if not settings.services and default_services:
            settings = settings.model_copy(update={"services": tuple(default_services)})
        return settings

    def data_dir(self, service: str) -> Path:
        """The folder a service keeps its read model and files in, created on first use."""
        path = self.workspace / service
        path.mkdir(parents=True, exist_ok=True)
        return path


def variable(field: str) -> str:
    """The environment variable of a settings field."""
    return ALIASES.get(field, PREFIX + field.upper())


def explain(exc: ValidationError) -> str:
    """A validation error as lines that name the environment variable at fault."""
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        if not loc:
            lines.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        name = str(loc[0])
        name = name if name.startswith(PREFIX) else variable(name)
        message = str(error["msg"]).removeprefix("Value error, ")
        shown = error.get("input")
        if name == variable("nats_url") and isinstance(shown, str):  # no password in a log
            shown = ",".join(server.rsplit("@", 1)[-1] for server in shown.split(","))
        lines.append(f"{name}: {message}, got {shown!r}")
    return "\n".join(lines)


def check_nats_server(server: str) -> None:
    """ValueError unless ``server`` is a NATS server as nats-py reads one (``host[:port]``, or
    ``nats|tls|ws|wss://[user:pass@]host[:port]``): a wrong scheme or port is said at start,
    not found by a connect that times out."""
    scheme, _, rest = server.rpartition("://")
    if scheme not in ("", "nats", "tls", "ws", "wss"):
        raise ValueError(f"{scheme}:// is not a NATS scheme (nats://, tls://, ws:// or wss://)")
    try:
        parsed = urlsplit(f"{scheme or 'nats'}://{rest}")
        port = parsed.port
    except ValueError as exc:
        raise ValueError(f"not a NATS server address: {exc}") from None
    if not parsed.hostname or parsed.path not in ("", "/") or port == 0:
        raise ValueError("not a NATS server address: expected [scheme://]host[:port]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def secret_file(path: Path) -> str:
    """The secret stored at ``path``, generated there (mode 0600) if there is none yet.

    Several processes start at once and each may find no file: each writes its candidate to a
    private temporary file and hard-links it into place, which succeeds for exactly one of them
    and never shows a half-written file; everyone then reads the winner's."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_urlsafe(48).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(candidate, path)
    except FileExistsError:
        pass  # another process won the race: its secret is the one
    finally:
        os.unlink(candidate)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:
        raise SystemExit(f"{path} is empty: delete it to have a new secret generated")
    return secret
