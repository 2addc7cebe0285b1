"""Command handlers of the identity service: establish the facts, decide, store, reply.

The slow and secret work happens here, never in the decider: hashing and sealing a password,
verifying one (in a worker thread: argon2 takes tens of milliseconds by design), drawing a
fresh refresh token or API key secret. The decider gets what was established (``password_ok``,
the seal, the secret's sha256, the clock). A sign-in answers ``SessionIssued`` and a new key
``ApiKeyCreated``: the secrets they carry are in the reply only, never in an event.
Imports the domain, ``contracts`` and kernel ports; the repository and passwords are passed in.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import msgspec

from contracts import common
from contracts import identity as c
from contracts.common import CommandAccepted, CommandRejected
from contracts.envelope import Message
from services.identity import domain
from services.identity.metrics import SESSIONS_REFRESHED, SignInOutcome, signed_in
from services.identity.passwords import Passwords, digest, new_secret
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.repository import Repository

log = logging.getLogger(__name__)

#: The first admin's user id; ``studio up`` tells people to sign in with it.
ADMIN = "admin"
#: HTTP statuses of refusals whose code alone does not say (the gateway's map lacks them).
_STATUS = {c.INVALID_CREDENTIALS: 401}

Decide = Callable[[domain.State], list[c.Event]]


def _now() -> datetime:
    return datetime.now(UTC)


class Identity:
    def __init__(
        self,
        users: Repository[domain.State],
        passwords: Passwords,
        *,
        session_days: float,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.users = users
        self.passwords = passwords
        self.session_days = session_days
        self.clock = clock
        #: One decision at a time per user in this instance: sign-ins of one user at once would
        #: otherwise race for the stream's next position and exhaust their retries.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def handle(self, command: c.Command, headers: Mapping[str, str]) -> c.Reply:
        """Every identity command's one entry point (the service's command table uses it)."""
        match command:
            case c.CreateUser():
                return await self.create_user(command, headers)
            case c.ChangePassword():
                return await self.change_password(command, headers)
            case c.Login():
                return await self.login(command, headers)
            case c.RefreshSession():
                return await self.refresh_session(command, headers)
            case c.IssueApiKey():
                return await self.issue_api_key(command, headers)
            case _:
                plain = command
                return await self._run(command.user_id, command, lambda s: domain.decide(s, plain))

    async def create_user(
        self, command: c.CreateUser, headers: Mapping[str, str] | None = None
    ) -> c.Reply:
        seal = await asyncio.to_thread(self.passwords.seal, command.password)
        return await self._run(
            command.user_id, command, lambda s: domain.create_user(s, command, seal=seal), headers
        )

    async def change_password(
        self, command: c.ChangePassword, headers: Mapping[str, str] | None = None
    ) -> c.Reply:
        seal = await asyncio.to_thread(self.passwords.seal, command.new_password)

        def decide(state: domain.State) -> list[c.Event]:
            current_ok = command.current_password is not None and self.passwords.verify(
                state.password_seal if state else None, command.current_password
            )
            return domain.change_password(state, command, current_ok=current_ok, seal=seal)

        return await self._run(command.user_id, command, decide, headers, offload=True)

    async def login(self, command: c.Login, headers: Mapping[str, str] | None = None) -> c.Reply:
        user_id = _username(command.user_id)
        if user_id is None:  # no such user can exist: the same work and answer as a wrong password
            await asyncio.to_thread(self.passwords.verify, None, command.password)
            signed_in("refused")
            return invalid_credentials()
        token, now = new_secret(), self.clock()
        expires_at, seen = now + timedelta(days=self.session_days), _Seen()
        # Verified before the user's lock, so that sign-ins of one user verify in parallel; the
        # decision verifies again only if the password changed in between.
        known, _ = await self.users.get(user_id)
        seal = known.password_seal if known else None
        verified = {seal: await asyncio.to_thread(self.passwords.verify, seal, command.password)}

        def decide(state: domain.State) -> list[c.Event]:
            seal = state.password_seal if state else None
            if seal not in verified:
                verified[seal] = self.passwords.verify(seal, command.password)
            ok = verified[seal]
            return domain.login(
                seen(state),
                command,
                password_ok=ok,
                refresh_hash=digest(token),
                expires_at=expires_at,
            )

        reply = await self._run(user_id, _as_actor(command, user_id), decide, headers, offload=True)
        answer = seen.session(reply, command.session_id, token, expires_at)
        signed_in(seen.outcome(answer))
        return answer

    async def refresh_session(
        self, command: c.RefreshSession, headers: Mapping[str, str] | None = None
    ) -> c.Reply:
        user_id = _username(command.user_id)
        if user_id is None:
            return invalid_credentials()
        token, now = new_secret(), self.clock()
        expires_at, seen = now + timedelta(days=self.session_days), _Seen()

        def decide(state: domain.State) -> list[c.Event]:
            return seen.decided(
                domain.refresh_session(
                    seen(state),
                    command,
                    presented_hash=digest(command.refresh_token),
                    new_hash=digest(token),
                    now=now,
                    expires_at=expires_at,
                )
            )

        reply = await self._run(user_id, _as_actor(command, user_id), decide, headers)
        if seen.ended:  # a reused refresh token: the session is ended, the answer a refusal
            log.warning("a rotated-out refresh token of %s came back; session ended", user_id)
            return invalid_credentials()
        answer = seen.session(reply, command.session_id, token, expires_at)
        if isinstance(answer, c.SessionIssued):
            SESSIONS_REFRESHED.inc()
        return answer

    async def issue_api_key(
        self, command: c.IssueApiKey, headers: Mapping[str, str] | None = None
    ) -> c.Reply:
        secret, now = new_secret(), self.clock()
        reply = await self._run(
            command.user_id,
            command,
            lambda s: domain.issue_api_key(s, command, key_hash=digest(secret), now=now),
            headers,
        )
        if not isinstance(reply, CommandAccepted):
            return reply
        return c.ApiKeyCreated(
            user_id=command.user_id,
            key_id=command.key_id,
            key=f"{c.API_KEY_PREFIX}{command.key_id}_{secret}",
            expires_at=command.expires_at,
            version=reply.version,
            sequence=reply.sequence,
            correlation_id=command.correlation_id,
            causation_id=command.message_id,
        )

    async def ensure_first_admin(self, password: str) -> Literal["created", "existed"] | None:
        """Create ``admin`` (site admin, premium) unless it exists; None if it could not be.

        Idempotent across instances: two starting at once both try, the event store lets one
        in (expected version 0) and the other sees CONFLICT, which means it exists."""
        state, _ = await self.users.get(ADMIN)
        if state is not None:
            return "existed"
        create = c.CreateUser(
            user_id=ADMIN, password=password, site_role="admin", tier="premium", actor="system"
        )
        reply = await self.create_user(create)
        if isinstance(reply, CommandAccepted):
            log.info("created the first admin user %r", ADMIN)
            return "created"
        if isinstance(reply, CommandRejected) and reply.code == common.CONFLICT:
            return "existed"
        log.error("could not create the first admin: %s", reply)
        return None

    async def _run(
        self,
        user_id: str,
        command: c.Command,
        decide: Decide,
        headers: Mapping[str, str] | None = None,
        *,
        offload: bool = False,
    ) -> c.Reply:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        async with lock:
            reply = await execute(
                self.users,
                user_id,
                command,
                decide,
                headers=headers or {},
                refusals=(DomainError,),
                noun="user",
                offload=offload,
            )
        if isinstance(reply, CommandRejected) and reply.code in _STATUS:
            return msgspec.structs.replace(reply, status=_STATUS[reply.code])
        return reply


class _Seen:
    """Remembers the user a sign-in was decided against, to answer with its role and tier."""

    user: domain.User | None = None
    #: The decision ended the session instead (a reused refresh token).
    ended: bool = False

    def __call__(self, state: domain.State) -> domain.State:
        self.user = state
        return state

    def decided(self, events: list[c.Event]) -> list[c.Event]:
        self.ended = any(isinstance(e, c.SessionEnded) for e in events)
        return events

    def outcome(self, answer: c.Reply) -> SignInOutcome:
        """How a sign-in ended, for the metrics: a disabled user's refusal is ``locked``."""
        if isinstance(answer, c.SessionIssued):
            return "succeeded"
        return "locked" if self.user is not None and self.user.disabled else "refused"

    def session(self, reply: c.Reply, session_id: str, token: str, expires_at: datetime) -> c.Reply:
        if not isinstance(reply, CommandAccepted) or self.user is None:
            return reply
        return c.SessionIssued(
            user_id=self.user.user_id,
            session_id=session_id,
            refresh_token=token,
            refresh_expires_at=expires_at,
            site_role=self.user.site_role,
            tier=self.user.tier,
            version=reply.version,
            sequence=reply.sequence,
            correlation_id=reply.correlation_id,
            causation_id=reply.causation_id,
        )


def invalid_credentials() -> CommandRejected:
    return CommandRejected(
        code=c.INVALID_CREDENTIALS, message=c.INVALID_CREDENTIALS_MESSAGE, status=401
    )


def _username(raw: str) -> str | None:
    """The user id a sign-in names (user names are case-insensitive), or None if no user can
    have it."""
    name = raw.strip().lower()
    return name if re.fullmatch(c.USERNAME_PATTERN, name) else None


M = TypeVar("M", bound=Message)


def _as_actor(command: M, user_id: str) -> M:
    """A sign-in is done by the user signing in: its events' actor (the audit's "who")."""
    if command.actor != "anonymous":
        return command
    return msgspec.structs.replace(command, actor=user_id)
