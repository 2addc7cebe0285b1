"""The User aggregate as a pure decider: its sessions and API keys, ``decide`` and ``evolve``.

No I/O, no clock, no randomness, no hashing: the handler establishes the facts a decision needs
(the clock, whether a password verified, the sealed hash of a new password, the sha256 of a
fresh secret) and passes them in, so every rule here is a plain function of its inputs.
Imports ``contracts`` and the kernel's ``DomainError`` only.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import reduce
from types import MappingProxyType
from typing import TypeVar

from contracts import identity as c
from services.kernel.domain import Conflict, DomainError, InvalidInput, NotFound

#: The most API keys one user may hold at once (revoked and expired ones aside).
MAX_API_KEYS = 100


#: How many of a session's rotated-out refresh tokens are remembered, to catch one coming back.
ROTATED_KEPT = 50


@dataclass(frozen=True)
class Session:
    refresh_hash: str
    expires_at: datetime
    #: Hashes of the refresh tokens this session had before (the latest ``ROTATED_KEPT``).
    rotated: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiKey:
    name: str
    expires_at: datetime | None
    revoked: bool = False


V = TypeVar("V")


def _none() -> Mapping[str, V]:
    """An empty read-only mapping: states are never changed in place."""
    return MappingProxyType({})


@dataclass(frozen=True)
class User:
    user_id: str
    site_role: str
    tier: str
    password_seal: bytes
    disabled: bool = False
    #: Live sessions only: ended, expired and pre-password-change ones are dropped on replay.
    sessions: Mapping[str, Session] = field(default_factory=_none)
    #: Every key ever issued (a revoked key's id is never reused).
    api_keys: Mapping[str, ApiKey] = field(default_factory=_none)
    #: The message id of the command that created it: a retried create is recognised by it.
    created_by: str | None = None


State = User | None


class InvalidCredentials(DomainError):
    """A wrong password, an unknown or disabled user, a bad refresh token: all said alike."""

    code = c.INVALID_CREDENTIALS

    def __init__(self) -> None:
        super().__init__(c.INVALID_CREDENTIALS_MESSAGE)


class UserNotFound(NotFound):
    """No user has that id."""


class UserAlreadyExists(Conflict):
    """The user id is taken."""


class UserIsDisabled(Conflict):
    """A disabled user cannot be given new API keys."""


class SessionAlreadyStarted(Conflict):
    """A session id the gateway already used for another sign-in."""


class WrongCurrentPassword(InvalidInput):
    """A password change whose ``current_password`` is not the user's password."""


class InvalidApiKey(InvalidInput):
    """An API key that cannot be issued as asked (its expiry is past)."""


class ApiKeyAlreadyExists(Conflict):
    """A key id already issued."""


class TooManyApiKeys(Conflict):
    """The user holds ``MAX_API_KEYS`` live keys already."""


class ApiKeyNotFound(NotFound):
    """The user has no key with that id."""


# --- the commands that need no outside facts --------------------------------------------------

Plain = c.DisableUser | c.EnableUser | c.EndSession | c.RevokeApiKey


def decide(state: State, command: Plain) -> list[c.Event]:
    """The events ``command`` causes on ``state``, or a ``DomainError`` saying why not.

    Commands that need facts from outside (a verified password, a fresh secret's hash, the
    clock) have their own functions below."""
    match command:
        case c.DisableUser():
            user = existing(state, command.user_id)
            return [] if user.disabled else [c.UserDisabled(user_id=user.user_id)]
        case c.EnableUser():
            user = existing(state, command.user_id)
            return [c.UserEnabled(user_id=user.user_id)] if user.disabled else []
        case c.EndSession():
            user = existing(state, command.user_id)
            if command.session_id not in user.sessions:
                return []  # signing out twice, or after expiry, is already done
            return [c.SessionEnded(user_id=user.user_id, session_id=command.session_id)]
        case c.RevokeApiKey():
            user = existing(state, command.user_id)
            key = user.api_keys.get(command.key_id)
            if key is None:
                raise ApiKeyNotFound(f"API key {command.key_id} not found", field="key_id")
            if key.revoked:
                return []
            return [c.ApiKeyRevoked(user_id=user.user_id, key_id=command.key_id)]
    raise TypeError(f"not a plain identity command: {type(command).__name__}")


# --- the commands that need facts the handler established -------------------------------------


def create_user(state: State, command: c.CreateUser, *, seal: bytes) -> list[c.Event]:
    """``seal``: the new password's argon2 hash, sealed."""
    if state is not None:
        if state.created_by != command.message_id:
            raise UserAlreadyExists(f"user {command.user_id} already exists", field="user_id")
        return []  # the same create, retried: it already happened
    return [
        c.UserCreated(
            user_id=command.user_id,
            site_role=command.site_role,
            tier=command.tier,
            password_seal=seal,
        )
    ]


def change_password(
    state: State, command: c.ChangePassword, *, current_ok: bool, seal: bytes
) -> list[c.Event]:
    """``current_ok``: ``command.current_password`` verified (unused for an admin's reset)."""
    user = existing(state, command.user_id)
    if command.current_password is not None and not current_ok:
        raise WrongCurrentPassword("the current password is wrong", field="current_password")
    return [c.PasswordChanged(user_id=user.user_id, password_seal=seal)]


def login(
    state: State,
    command: c.Login,
    *,
    password_ok: bool,
    refresh_hash: str,
    expires_at: datetime,
) -> list[c.Event]:
    """``password_ok``: the password verified against the user's seal (or a dummy, if none)."""
    if state is None or state.disabled or not password_ok:
        raise InvalidCredentials()
    if command.session_id in state.sessions:
        raise SessionAlreadyStarted(f"session {command.session_id} was already started")
    return [
        c.SessionStarted(
            user_id=state.user_id,
            session_id=command.session_id,
            refresh_hash=refresh_hash,
            expires_at=expires_at,
        )
    ]


def refresh_session(
    state: State,
    command: c.RefreshSession,
    *,
    presented_hash: str,
    new_hash: str,
    now: datetime,
    expires_at: datetime,
) -> list[c.Event]:
    """Rotate the session's refresh token: the presented one must be its current one.

    A token rotated out earlier that comes back was copied (by whoever presented it, or by
    whoever refreshed with it first): the session ends, so that neither copy works any longer;
    the handler answers INVALID_CREDENTIALS all the same."""
    if state is None or state.disabled:
        raise InvalidCredentials()
    session = state.sessions.get(command.session_id)
    if session is None or session.expires_at <= now:
        raise InvalidCredentials()
    if not hmac.compare_digest(session.refresh_hash, presented_hash):
        if any(hmac.compare_digest(old, presented_hash) for old in session.rotated):
            return [
                c.SessionEnded(
                    user_id=state.user_id,
                    session_id=command.session_id,
                    reason=c.REFRESH_TOKEN_REUSED,
                )
            ]
        raise InvalidCredentials()
    return [
        c.SessionRefreshed(
            user_id=state.user_id,
            session_id=command.session_id,
            refresh_hash=new_hash,
            expires_at=expires_at,
        )
    ]


def issue_api_key(
    state: State, command: c.IssueApiKey, *, key_hash: str, now: datetime
) -> list[c.Event]:
    """``key_hash``: sha256 hex of the new key's secret."""
    user = existing(state, command.user_id)
    if user.disabled:
        raise UserIsDisabled(f"user {user.user_id} is disabled")
    if command.key_id in user.api_keys:
        raise ApiKeyAlreadyExists(f"API key {command.key_id} already exists", field="key_id")
    name = command.name.strip()
    if not name:
        raise InvalidApiKey("name must not be empty", field="name")
    if command.expires_at is not None:
        if command.expires_at.utcoffset() is None:
            raise InvalidApiKey("expires_at must say its time zone", field="expires_at")
        if command.expires_at <= now:
            raise InvalidApiKey("expires_at must be in the future", field="expires_at")
    if len(live_keys(user, now)) >= MAX_API_KEYS:
        raise TooManyApiKeys(f"a user may hold at most {MAX_API_KEYS} API keys; revoke one first")
    return [
        c.ApiKeyIssued(
            user_id=user.user_id,
            key_id=command.key_id,
            name=name,
            key_hash=key_hash,
            expires_at=command.expires_at,
        )
    ]


def live_keys(user: User, now: datetime) -> list[str]:
    """The ids of the user's keys that still work at ``now``."""
    return [
        key_id
        for key_id, key in user.api_keys.items()
        if not key.revoked and (key.expires_at is None or key.expires_at > now)
    ]


# --- evolve -----------------------------------------------------------------------------------


def evolve(state: State, event: c.Event) -> State:
    if isinstance(event, c.UserCreated):
        return User(
            user_id=event.user_id,
            site_role=event.site_role,
            tier=event.tier,
            password_seal=event.password_seal,
            created_by=event.causation_id,
        )
    user = _live(existing(state, event.user_id), event.occurred_at)
    match event:
        case c.UserDisabled():
            # Disabling ends every session: enabling again does not bring them back.
            return replace(user, disabled=True, sessions=_none())
        case c.UserEnabled():
            return replace(user, disabled=False)
        case c.PasswordChanged():
            return replace(user, password_seal=event.password_seal, sessions=_none())
        case c.SessionStarted():
            session = Session(refresh_hash=event.refresh_hash, expires_at=event.expires_at)
            return replace(user, sessions=_with(user.sessions, event.session_id, session))
        case c.SessionRefreshed():
            before = user.sessions.get(event.session_id)
            rotated = (*before.rotated, before.refresh_hash)[-ROTATED_KEPT:] if before else ()
            session = Session(event.refresh_hash, event.expires_at, rotated)
            return replace(user, sessions=_with(user.sessions, event.session_id, session))
        case c.SessionEnded():
            return replace(user, sessions=_without(user.sessions, event.session_id))
        case c.ApiKeyIssued():
            key = ApiKey(name=event.name, expires_at=event.expires_at)
            return replace(user, api_keys=_with(user.api_keys, event.key_id, key))
        case c.ApiKeyRevoked():
            revoked = replace(user.api_keys[event.key_id], revoked=True)
            return replace(user, api_keys=_with(user.api_keys, event.key_id, revoked))
    return user


def fold(events: list[c.Event], state: State = None) -> State:
    return reduce(evolve, events, state)


def existing(state: State, user_id: str) -> User:
    if state is None:
        raise UserNotFound(f"user {user_id} not found", field="user_id")
    return state


def _live(user: User, now: datetime) -> User:
    """``user`` without the sessions expired at ``now`` (an event's time): a long-lived user's
    state holds its live sessions, not every sign-in it ever made."""
    if all(s.expires_at > now for s in user.sessions.values()):
        return user
    live = {k: s for k, s in user.sessions.items() if s.expires_at > now}
    return replace(user, sessions=MappingProxyType(live))


def _with(mapping: Mapping[str, V], key: str, value: V) -> Mapping[str, V]:
    return MappingProxyType({**mapping, key: value})


def _without(mapping: Mapping[str, V], key: str) -> Mapping[str, V]:
    return MappingProxyType({k: v for k, v in mapping.items() if k != key})
