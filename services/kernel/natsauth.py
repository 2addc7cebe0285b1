"""Who may connect to NATS and what each may do: users, their permissions, their secrets.

A :class:`BusUser` says in the deployment's words what a process does on the bus (the streams
it owns and reads, the requests it serves and sends, its buckets, its live signals);
:meth:`BusUser.grant` turns that into the subjects nats-server lets it publish and subscribe
to, JetStream's API (``$JS.API.…``) included, so a table of users reads as facts, not as
subject patterns. :func:`authorization` renders the users into the ``authorization`` block of
an embedded server's configuration.

Each user authenticates with an nkey: the server's configuration holds only public keys; the
seed lives in a file of mode 0600 that is generated once (:func:`ensure_seed`). An ``operator``
user (a password, for tooling and tests) may do everything. Clients connect with
:func:`client_options`, which sets the inbox prefix that the user's permissions allow
(``_INBOX_<name>``), so that no user can read another's replies.

Knows no service and no context. Imports the standard library, nkeys and ``services.kernel``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import nkeys

#: The user that may do everything: ``studio`` tooling, the test fixtures, provisioning.
OPERATOR = "operator"
JS_API = "$JS.API"


def inbox_prefix(user: str) -> str:
    """The reply subjects of ``user``'s requests and consumers: ``_INBOX_<user>.…``."""
    return f"_INBOX_{user}"


@dataclass(frozen=True)
class Bucket:
    """A JetStream KV (``kv``) or Object Store (``objects``) bucket a user works with."""

    name: str
    kind: Literal["kv", "objects"]
    #: May put and delete keys or objects (else it only reads them).
    write: bool = False
    #: May create the bucket when it does not exist yet (whoever opens it first creates it).
    create: bool = False

    @property
    def stream(self) -> str:
        return f"KV_{self.name}" if self.kind == "kv" else f"OBJ_{self.name}"

    @property
    def subjects(self) -> str:
        return f"$KV.{self.name}.>" if self.kind == "kv" else f"$O.{self.name}.>"


@dataclass(frozen=True)
class Grant:
    """What nats-server lets one user do: subjects to publish to and to subscribe to; it may
    always answer the requests it receives (``allow_responses``)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


@dataclass(frozen=True)
class BusUser:
    """One process kind's part on the bus, in the deployment's words."""

    name: str
    #: Event streams it creates and appends to, as (stream name, subject patterns).
    owns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Event streams it reads (loads, projections, live tails), its own included or not.
    reads: tuple[str, ...] = ()
    #: Request subjects it answers (commands, queries, health).
    serves: tuple[str, ...] = ()
    #: Request subjects it sends (another's commands and queries).
    asks: tuple[str, ...] = ()
    #: Core NATS subjects it publishes without storing (live progress).
    emits: tuple[str, ...] = ()
    #: Core NATS subjects it listens to.
    hears: tuple[str, ...] = ()
    buckets: tuple[Bucket, ...] = field(default=())

    def grant(self) -> Grant:
        """The subjects this user may publish to and subscribe to, JetStream's API included."""
        pub: list[str] = [f"{JS_API}.INFO", f"{JS_API}.STREAM.NAMES"]
        sub: list[str] = [f"{inbox_prefix(self.name)}.>"]
        for stream, subjects in self.owns:
            pub += [*subjects, f"{JS_API}.STREAM.CREATE.{stream}"]
            pub.append(f"{JS_API}.STREAM.UPDATE.{stream}")
        owned = [stream for stream, _ in self.owns]
        for stream in _unique([*owned, *self.reads]):
            pub += _reader(stream)
        for bucket in self.buckets:
            pub += _reader(bucket.stream)
            if bucket.write:
                pub.append(bucket.subjects)
                if bucket.kind == "objects":  # replacing or deleting an object purges its chunks
                    pub.append(f"{JS_API}.STREAM.PURGE.{bucket.stream}")
            if bucket.create:
                pub.append(f"{JS_API}.STREAM.CREATE.{bucket.stream}")
        pub += [*self.asks, *self.emits]
        sub += [*self.serves, *self.hears]
        return Grant(publish=tuple(_unique(pub)), subscribe=tuple(_unique(sub)))


def _reader(stream: str) -> list[str]:
    """Read a stream: its info, consumers (durable, ephemeral, ordered), fetches, acks, flow
    control, and single messages (direct or not). Never delete, purge or edit it."""
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- secrets -------------------------------------------------------------------------------


def write_secret(path: Path, text: str) -> str:
    """Write ``text`` to a new file of mode 0600; if another writer was first, keep theirs."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
        out.flush()
        os.fsync(out.fileno())
    return text


def secrets_dir(workspace: Path) -> Path:
    """Where an embedded server's users' secrets live in a workspace."""
    return workspace / "secrets" / "nats"


def seed_path(folder: Path, user: str) -> Path:
    """The file of ``user``'s nkey seed in a secrets folder."""
    return folder / f"{user}.nk"


def ensure_seed(path: Path) -> str:
    """The public nkey of the user seed in ``path``, generating the seed on first use."""
    if not path.exists():
        seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
        write_secret(path, seed.decode())
    pair = nkeys.from_seed(bytearray(path.read_bytes().strip()))
    try:
        return str(pair.public_key.decode())
    finally:
        pair.wipe()


def ensure_password(path: Path) -> str:
    """The password in ``path``, generating it on first use (URL-safe, 256 random bits)."""
    if path.exists():
        return path.read_text().strip()
    return write_secret(path, secrets.token_urlsafe(32))


@dataclass(frozen=True)
class Access:
    """The users of one server and the folder their secrets live in (generated once)."""

    secrets_dir: Path
    users: tuple[BusUser, ...]

    def operator_password(self) -> str:
        return ensure_password(self.secrets_dir / f"{OPERATOR}.password")

    def operator_url(self, url: str) -> str:
        """``url`` (comma-separated servers) with the operator's user and password in it."""
        password = quote(self.operator_password(), safe="")
        return ",".join(_with_userinfo(u.strip(), f"{OPERATOR}:{password}") for u in url.split(","))

    def config(self) -> str:
        """The server's ``authorization`` block; generates missing seeds and the password."""
        keyed = [(u, ensure_seed(seed_path(self.secrets_dir, u.name))) for u in self.users]
        return authorization(keyed, self.operator_password())


def tooling_url(url: str, workspace: Path) -> str:
    """``url`` as tooling (``studio ping``, ``studio rebuild``) connects: as the operator of the
    embedded server of ``workspace`` when its password is there and ``url`` names no user."""
    password = secrets_dir(workspace) / f"{OPERATOR}.password"
    if "@" in url or not password.exists():
        return url
    return Access(secrets_dir(workspace), ()).operator_url(url)


def _with_userinfo(url: str, userinfo: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def authorization(users: Sequence[tuple[BusUser, str]], operator_password: str) -> str:
    """The ``authorization { users: [...] }`` block: the operator, then one nkey per user."""
    q = json.dumps
    lines = ["authorization {", "  users: ["]
    lines.append(f"    {{user: {q(OPERATOR)}, password: {q(operator_password)}}}")
    for user, public_key in users:
        grant = user.grant()
        lines += [
            f"    # {user.name}",
            f"    {{nkey: {q(public_key)}, permissions: {{",
            f"      publish: {{allow: {q(list(grant.publish))}}}",
            f"      subscribe: {{allow: {q(list(grant.subscribe))}}}",
            "      allow_responses: true",
            "    }}",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


# --- clients -------------------------------------------------------------------------------


def credentials_file(explicit: Path | None, folder: Path, user: str) -> Path | None:
    """The credentials a process of ``user`` connects with: ``explicit`` (``STUDIO_NATS_CREDS``)
    when given (a file, or a folder holding ``<user>.creds`` or ``<user>.nk`` for each user),
    else the seed an embedded server generated into the workspace, else none."""
    if explicit is not None and explicit.is_dir():
        jwt = explicit / f"{user}.creds"
        return jwt if jwt.exists() else seed_path(explicit, user)
    if explicit is not None:
        return explicit
    generated = seed_path(folder, user)
    return generated if generated.exists() else None


def client_options(creds: Path | None, user: str) -> dict[str, Any]:
    """nats-py (and faststream) connect options for ``user`` with the credentials in ``creds``:
    a ``.creds`` file (user JWT and seed, for servers in operator mode) or an nkey seed file.
    None: no credentials (a server without authorization, or a user and password in the URL)."""
    if creds is None:
        return {}
    if not creds.is_file():
        raise FileNotFoundError(f"NATS credentials file {creds} does not exist")
    text = creds.read_text(errors="replace")
    key = "user_credentials" if "BEGIN NATS USER JWT" in text else "nkeys_seed"
    return {key: str(creds), "inbox_prefix": inbox_prefix(user)}
