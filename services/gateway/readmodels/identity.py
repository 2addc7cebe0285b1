"""The gateway's read model of identity: users, their sign-in sessions and their API keys, folded
from the IDENTITY stream, and the queries that authenticate a request with them.

It never holds a password, sealed or not: ``UserCreated`` and ``PasswordChanged`` carry a sealed
hash that only the identity service can open, and this model keeps only *when* the password last
changed. Refresh tokens and API keys are kept as the sha256 of their secret, as their events
carry them. A request's token is checked through the lean path (``user_seen``, ``session_seen``:
the kernel's ``Reader``, no ORM session). Imports sqlmodel, the kernel's projection plumbing and
``contracts.identity``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, func, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import identity as c
from services.gateway.readmodels.base import Page, iso
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes
from services.kernel.sqlite import Reader

__all__ = [
    "ApiKeyRow",
    "IdentityProjector",
    "RefreshTokenRow",
    "SessionRow",
    "SessionSeen",
    "UserRow",
    "UserSeen",
    "get_api_key",
    "get_session",
    "get_user",
    "list_api_keys",
    "list_users",
    "session_by_refresh_hash",
    "session_seen",
    "user_seen",
]


class UserRow(SQLModel, table=True):
    __tablename__ = "identity_users"
    id: str = Field(primary_key=True)
    site_role: str
    tier: str
    disabled: bool = False
    #: When the password last changed: every session started before it is over.
    password_changed_at: datetime | None = None
    created_at: datetime = Field(index=True)
    version: int = 1

    def public(self) -> dict[str, object]:
        """What clients see of a user."""
        return {
            "id": self.id,
            "site_role": self.site_role,
            "tier": self.tier,
            "status": "disabled" if self.disabled else "active",
            "created_at": iso(self.created_at),
            "password_changed_at": (
                iso(self.password_changed_at) if self.password_changed_at else None
            ),
        }


class SessionRow(SQLModel, table=True):
    __tablename__ = "identity_sessions"
    id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    #: sha256 hex of the session's current refresh token (rotated on every refresh).
    refresh_hash: str = Field(index=True)
    refresh_expires_at: datetime
    started_at: datetime
    ended: bool = False


class RefreshTokenRow(SQLModel, table=True):
    """Every refresh token a session was ever given (its sha256), the rotated-out ones too: one
    that comes back must still reach the identity service, which ends the session it was copied
    from."""

    __tablename__ = "identity_refresh_tokens"
    refresh_hash: str = Field(primary_key=True)
    session_id: str = Field(index=True)
    user_id: str


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "identity_api_keys"
    key_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    name: str
    key_hash: str
    expires_at: datetime | None = None
    revoked: bool = False
    created_at: datetime

    def public(self) -> dict[str, object]:
        """What its owner sees of a key: never the key, nor its hash."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at) if self.expires_at else None,
            "status": "revoked" if self.revoked else "active",
        }


class IdentityProjector(Decodes):
    name = "identity"
    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = (
        UserRow.__table__,  # type: ignore[attr-defined]
        SessionRow.__table__,  # type: ignore[attr-defined]
        RefreshTokenRow.__table__,  # type: ignore[attr-defined]
        ApiKeyRow.__table__,  # type: ignore[attr-defined]
    )
    event_type = c.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[c.Event]) -> None:
        event = stored.event
        if isinstance(event, c.UserCreated):
            row = UserRow(
                id=event.user_id,
                site_role=event.site_role,
                tier=event.tier,
                created_at=event.occurred_at,
            )
            db.add(row)  # the sealed password stays in the stream
            return
        user = await db.get(UserRow, event.user_id)
        if user is None:  # an event of a user this model never saw created: nothing to fold
            return
        user.version += 1
        db.add(user)
        match event:
            case c.UserDisabled():
                user.disabled = True
            case c.UserEnabled():
                user.disabled = False
            case c.PasswordChanged():
                user.password_changed_at = event.occurred_at
                await _end_sessions(db, event.user_id)
            case c.SessionStarted() | c.SessionRefreshed():
                await _session(db, event)
            case c.SessionEnded():
                if (ended := await db.get(SessionRow, event.session_id)) is not None:
                    ended.ended = True
                    db.add(ended)
            case c.ApiKeyIssued():
                db.add(_key(event))
            case c.ApiKeyRevoked():
                if (key := await db.get(ApiKeyRow, event.key_id)) is not None:
                    key.revoked = True
                    db.add(key)


async def _end_sessions(db: AsyncSession, user_id: str) -> None:
    """A new password ends every session the user had: their tokens stop working."""
    stmt = update(SessionRow).where(col(SessionRow.user_id) == user_id).values(ended=True)
    await db.exec(stmt)


async def _session(db: AsyncSession, event: c.SessionStarted | c.SessionRefreshed) -> None:
    row = await db.get(SessionRow, event.session_id)
    if row is None:
        row = SessionRow(
            id=event.session_id,
            user_id=event.user_id,
            refresh_hash=event.refresh_hash,
            refresh_expires_at=event.expires_at,
            started_at=event.occurred_at,
        )
    row.refresh_hash, row.refresh_expires_at = event.refresh_hash, event.expires_at
    db.add(row)
    if await db.get(RefreshTokenRow, event.refresh_hash) is None:
        db.add(
            RefreshTokenRow(
                refresh_hash=event.refresh_hash, session_id=event.session_id, user_id=event.user_id
            )
        )


def _key(event: c.ApiKeyIssued) -> ApiKeyRow:
    return ApiKeyRow(
        key_id=event.key_id,
        user_id=event.user_id,
        name=event.name,
        key_hash=event.key_hash,
        expires_at=event.expires_at,
        created_at=event.occurred_at,
    )


# --- queries ----------------------------------------------------------------------------------


async def get_user(db: AsyncSession, *, user_id: str) -> UserRow | None:
    return await db.get(UserRow, user_id)


async def get_session(db: AsyncSession, *, session_id: str) -> SessionRow | None:
    return await db.get(SessionRow, session_id)


@dataclass(frozen=True)
class UserSeen:
    """What authenticating a request reads of a user (``UserRow``'s columns of the same names)."""

    id: str
    site_role: str
    tier: str
    disabled: bool
    password_changed_at: datetime | None


@dataclass(frozen=True)
class SessionSeen:
    """What authenticating a request reads of a session (``SessionRow``'s columns)."""

    id: str
    user_id: str
    ended: bool


_USER_SQL = (
    "SELECT id, site_role, tier, disabled, password_changed_at FROM identity_users WHERE id = ?"
)
_SESSION_SQL = "SELECT id, user_id, ended FROM identity_sessions WHERE id = ?"


def user_seen(reader: Reader, *, user_id: str) -> UserSeen | None:
    """``get_user`` through the lean path (a naive time, as the ORM gives it: UTC)."""
    found = reader.one(_USER_SQL, (user_id,))
    if found is None:
        return None
    uid, site_role, tier, disabled, changed = found
    when = datetime.fromisoformat(changed) if changed is not None else None
    return UserSeen(uid, site_role, tier, bool(disabled), when)


def session_seen(reader: Reader, *, session_id: str) -> SessionSeen | None:
    """``get_session`` through the lean path."""
    found = reader.one(_SESSION_SQL, (session_id,))
    return SessionSeen(found[0], found[1], bool(found[2])) if found else None


async def session_by_refresh_hash(db: AsyncSession, *, refresh_hash: str) -> SessionRow | None:
    """The session a refresh token was issued to, whether it is the session's current token or
    one rotated out since."""
    token = await db.get(RefreshTokenRow, refresh_hash)
    return await db.get(SessionRow, token.session_id) if token else None


async def get_api_key(db: AsyncSession, *, key_id: str) -> ApiKeyRow | None:
    return await db.get(ApiKeyRow, key_id)


async def list_api_keys(db: AsyncSession, *, user_id: str) -> list[ApiKeyRow]:
    """A user's keys, newest first, revoked ones included (they say so)."""
    query = select(ApiKeyRow).where(col(ApiKeyRow.user_id) == user_id)
    rows = await db.exec(query.order_by(col(ApiKeyRow.created_at).desc(), col(ApiKeyRow.key_id)))
    return list(rows.all())


async def list_users(db: AsyncSession, *, limit: int, offset: int) -> Page[UserRow]:
    """A page of users in the order they were created."""
    total = (await db.exec(select(func.count()).select_from(UserRow))).one()
    query = select(UserRow).order_by(col(UserRow.created_at), col(UserRow.id))
    rows = await db.exec(query.offset(offset).limit(limit))
    return Page(list(rows.all()), total, more=offset + limit < total)
