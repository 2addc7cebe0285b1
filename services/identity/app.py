"""Composition root of the identity service: the key, the event store, the endpoints, the first
admin."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from faststream.nats import NatsBroker

from contracts import identity as c
from services.identity import domain
from services.identity.handlers import ADMIN, Identity
from services.identity.passwords import SealedArgon2, load_key
from services.kernel.eventstore import EventStore
from services.kernel.repository import Repository
from services.kernel.service import Parts, answer_commands, run
from services.kernel.settings import Settings
from services.kernel.streams import StreamSpec, ensure_stream

log = logging.getLogger(__name__)

SERVICE = "identity"
STREAM = StreamSpec(c.STREAM, (c.EVENTS,))
COMMANDS: tuple[tuple[str, type[c.Command]], ...] = (
    (c.Subjects.CREATE_USER, c.CreateUser),
    (c.Subjects.DISABLE_USER, c.DisableUser),
    (c.Subjects.ENABLE_USER, c.EnableUser),
    (c.Subjects.CHANGE_PASSWORD, c.ChangePassword),
    (c.Subjects.LOGIN, c.Login),
    (c.Subjects.REFRESH_SESSION, c.RefreshSession),
    (c.Subjects.END_SESSION, c.EndSession),
    (c.Subjects.ISSUE_API_KEY, c.IssueApiKey),
    (c.Subjects.REVOKE_API_KEY, c.RevokeApiKey),
)
ADMIN_PASSWORD_ENV = "STUDIO_ADMIN_PASSWORD"
#: Written once, in the service's folder, when the first admin is known to exist: ``studio up``
#: generates a password only while it is absent, and prints it only if it says "created".
ADMIN_MARKER = "admin.created"


def admin_password(settings: Settings) -> str | None:
    """``STUDIO_ADMIN_PASSWORD``, checked now: a bad one stops the service with a message."""
    password = settings.admin_password
    if not password:
        return None
    if not c.PASSWORD_MIN <= len(password) <= c.PASSWORD_MAX:
        raise SystemExit(
            f"{ADMIN_PASSWORD_ENV} must be {c.PASSWORD_MIN} to {c.PASSWORD_MAX} characters long"
        )
    return password


def write_marker(path: Path, outcome: str) -> None:
    """Record how the first admin came to exist. "created" replaces what is there (an instance
    that lost the race to create it may have written "existed" a moment before); "existed" is
    written only where nothing is, so a later start never hides that this one created it."""
    body = json.dumps({"admin": ADMIN, "outcome": outcome, "at": datetime.now(UTC).isoformat()})
    if outcome != "created":
        with contextlib.suppress(FileExistsError), path.open("x") as out:
            out.write(body + "\n")
        return
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(body + "\n")
    temp.replace(path)


async def wire(broker: NatsBroker, settings: Settings) -> Parts:
    data = settings.data_dir(SERVICE)
    passwords = SealedArgon2(load_key(data, settings.identity_key_file))
    password = admin_password(settings)
    await ensure_stream(broker.connection.jetstream(), STREAM, settings.stream_replicas)
    store: EventStore[c.Event] = EventStore(
        broker.connection, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    days = float(settings.refresh_token_days)
    identity = Identity(Repository(store, domain.evolve, None), passwords, session_days=days)
    answer_commands(broker, SERVICE, [(s, t, identity.handle) for s, t in COMMANDS])

    async def first_admin() -> None:
        if password is None:
            state, _ = await identity.users.get(ADMIN)
            if state is None:
                log.warning("no admin user exists: set %s to create one", ADMIN_PASSWORD_ENV)
                return
            outcome: str | None = "existed"
        else:
            outcome = await identity.ensure_first_admin(password)
        if outcome is not None:
            write_marker(data / ADMIN_MARKER, outcome)

    return Parts(on_start=first_admin)


def main() -> None:
    run(SERVICE, wire)


if __name__ == "__main__":
    main()
