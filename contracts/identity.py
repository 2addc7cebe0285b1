"""The identity context: commands, events, replies and subjects of the User aggregate.

One aggregate, the **User**, with its sessions and API keys. The user id *is* the username
(lowercase, no dots: it is a NATS subject token), so a taken name is the event store's expected
version 0 and a login loads one stream. No secret is ever in an event: passwords are stored as
an argon2 hash sealed with the identity service's own key, refresh tokens and API keys as the
sha256 of their random secret; the secrets themselves travel in replies only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from contracts.common import CommandAccepted, CommandRejected, Id
from contracts.envelope import Message

CONTEXT: Final = "identity"
STREAM: Final = "IDENTITY"
EVENTS: Final = "evt.identity.>"

USERNAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{1,63}$"
PASSWORD_MIN: Final = 8
PASSWORD_MAX: Final = 256
#: The longest secret a command carries back (a refresh token); real ones are ~43 characters.
TOKEN_MAX: Final = 512
KEY_NAME_MAX: Final = 100
#: The prefix of every API key: ``sk_<key_id>_<secret>``.
API_KEY_PREFIX: Final = "sk_"
#: Why a session ended when its user did not sign out: a rotated-out refresh token came back.
REFRESH_TOKEN_REUSED: Final = "refresh_token_reused"
#: The refusal every failed sign-in gets, whatever the reason, so it tells nothing.
INVALID_CREDENTIALS: Final = "INVALID_CREDENTIALS"
INVALID_CREDENTIALS_MESSAGE: Final = "wrong username or password"

Username = Annotated[str, msgspec.Meta(pattern=USERNAME_PATTERN)]
#: An API key's id: an ``Id`` without underscores, so ``sk_<key_id>_<secret>`` splits at the
#: first underscore after the prefix.
KEY_ID_PATTERN: Final = r"^[A-Za-z0-9-]{1,128}$"
KeyId = Annotated[str, msgspec.Meta(pattern=KEY_ID_PATTERN)]
Password = Annotated[str, msgspec.Meta(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
Secret = Annotated[str, msgspec.Meta(max_length=TOKEN_MAX)]
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=KEY_NAME_MAX)]
SiteRole = Literal["admin", "user"]
Tier = Literal["free", "basic", "premium"]


def event_subject(user_id: str) -> str:
    """The one subject that holds every event of one user."""
    return f"evt.identity.{user_id}"


class Subjects:
    """Command subjects, ``cmd.<context>.<handler name>``."""

    CREATE_USER: Final = "cmd.identity.create_user"
    DISABLE_USER: Final = "cmd.identity.disable_user"
    ENABLE_USER: Final = "cmd.identity.enable_user"
    CHANGE_PASSWORD: Final = "cmd.identity.change_password"
    LOGIN: Final = "cmd.identity.login"
    REFRESH_SESSION: Final = "cmd.identity.refresh_session"
    END_SESSION: Final = "cmd.identity.end_session"
    ISSUE_API_KEY: Final = "cmd.identity.issue_api_key"
    REVOKE_API_KEY: Final = "cmd.identity.revoke_api_key"


# --- commands -------------------------------------------------------------------------------


class CreateUser(Message, frozen=True, tag="identity.create_user.v1"):
    user_id: Username
    password: Password
    site_role: SiteRole = "user"
    tier: Tier = "free"


class DisableUser(Message, frozen=True, tag="identity.disable_user.v1"):
    """Refuse the user's sign-ins, refreshes and API keys until enabled again."""

    user_id: Username


class EnableUser(Message, frozen=True, tag="identity.enable_user.v1"):
    user_id: Username


class ChangePassword(Message, frozen=True, tag="identity.change_password.v1"):
    """``current_password`` is ``None`` only when an admin resets another user's password (the
    gateway decides who may); otherwise it must be the user's current one."""

    user_id: Username
    new_password: Password
    current_password: Secret | None = None


class Login(Message, frozen=True, tag="identity.login.v1"):
    """Start session ``session_id`` (the gateway's id, its tokens' ``sid``) with a password.

    ``user_id`` is any string: a malformed name is refused exactly like a wrong password."""

    user_id: str
    password: Secret
    session_id: Id


class RefreshSession(Message, frozen=True, tag="identity.refresh_session.v1"):
    """Trade a session's refresh token for a new one (the old one stops working)."""

    user_id: str
    session_id: Id
    refresh_token: Secret


class EndSession(Message, frozen=True, tag="identity.end_session.v1"):
    user_id: Username
    session_id: Id


class IssueApiKey(Message, frozen=True, tag="identity.issue_api_key.v1"):
    user_id: Username
    key_id: KeyId
    name: KeyName
    expires_at: datetime | None = None


class RevokeApiKey(Message, frozen=True, tag="identity.revoke_api_key.v1"):
    user_id: Username
    key_id: KeyId


Command = (
    CreateUser
    | DisableUser
    | EnableUser
    | ChangePassword
    | Login
    | RefreshSession
    | EndSession
    | IssueApiKey
    | RevokeApiKey
)

# --- replies --------------------------------------------------------------------------------


class SessionIssued(Message, frozen=True, tag="identity.session_issued.v1"):
    """The answer to Login and RefreshSession; ``refresh_token`` is here and nowhere else.

    ``version``/``sequence`` are those of ``CommandAccepted``: the gateway waits for its read
    model to reach ``sequence`` before the session is known to it."""

    user_id: str
    session_id: str
    refresh_token: str
    refresh_expires_at: datetime
    site_role: str
    tier: str
    version: int
    sequence: int


class ApiKeyCreated(Message, frozen=True, tag="identity.api_key_created.v1"):
    """The answer to IssueApiKey; ``key`` (``sk_<key_id>_<secret>``) is shown this once."""

    user_id: str
    key_id: str
    key: str
    expires_at: datetime | None
    version: int
    sequence: int


Reply = CommandAccepted | CommandRejected | SessionIssued | ApiKeyCreated

# --- events ---------------------------------------------------------------------------------


class UserCreated(Message, frozen=True, tag="identity.user_created.v1"):
    """``password_seal``: the argon2 hash sealed with the identity service's key."""

    user_id: str
    site_role: str
    tier: str
    password_seal: bytes


class UserDisabled(Message, frozen=True, tag="identity.user_disabled.v1"):
    user_id: str


class UserEnabled(Message, frozen=True, tag="identity.user_enabled.v1"):
    user_id: str


class PasswordChanged(Message, frozen=True, tag="identity.password_changed.v1"):
    """Revokes every session and refresh token issued before it (its ``occurred_at``)."""

    user_id: str
    password_seal: bytes


class SessionStarted(Message, frozen=True, tag="identity.session_started.v1"):
    """``refresh_hash``: sha256 hex of the session's refresh token (the token is reply-only)."""

    user_id: str
    session_id: str
    refresh_hash: str
    expires_at: datetime


class SessionRefreshed(Message, frozen=True, tag="identity.session_refreshed.v1"):
    """The session's refresh token rotated: only the one hashed here works from now on."""

    user_id: str
    session_id: str
    refresh_hash: str
    expires_at: datetime


class SessionEnded(Message, frozen=True, tag="identity.session_ended.v1"):
    """The session's tokens stop working. ``reason``: "" when its user signed out,
    "refresh_token_reused" when a rotated-out refresh token came back (it was copied)."""

    user_id: str
    session_id: str
    reason: str = ""


class ApiKeyIssued(Message, frozen=True, tag="identity.api_key_issued.v1"):
    """``key_hash``: sha256 hex of the key's secret (what follows ``sk_<key_id>_``); the gateway
    checks a presented key against it (constant-time)."""

    user_id: str
    key_id: str
    name: str
    key_hash: str
    expires_at: datetime | None = None


class ApiKeyRevoked(Message, frozen=True, tag="identity.api_key_revoked.v1"):
    user_id: str
    key_id: str


Event = (
    UserCreated
    | UserDisabled
    | UserEnabled
    | PasswordChanged
    | SessionStarted
    | SessionRefreshed
    | SessionEnded
    | ApiKeyIssued
    | ApiKeyRevoked
)

ALL: tuple[type[Message], ...] = (
    CreateUser,
    DisableUser,
    EnableUser,
    ChangePassword,
    Login,
    RefreshSession,
    EndSession,
    IssueApiKey,
    RevokeApiKey,
    SessionIssued,
    ApiKeyCreated,
    UserCreated,
    UserDisabled,
    UserEnabled,
    PasswordChanged,
    SessionStarted,
    SessionRefreshed,
    SessionEnded,
    ApiKeyIssued,
    ApiKeyRevoked,
)
