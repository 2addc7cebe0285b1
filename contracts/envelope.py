"""The one envelope base that every command, event and reply carries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec


def new_id() -> str:
    """A fresh opaque id: 32 lowercase hex characters, safe in NATS subjects and URLs."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def tag_of(message_type: type[msgspec.Struct]) -> str:
    """The explicit versioned tag of a contract type, e.g. ``projects.project_created.v1``."""
    return str(message_type.__struct_config__.tag)


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Who did what, when, and because of what.

    ``correlation_id`` ties every message of one user request together (the gateway's request
    id); ``causation_id`` names the message that caused this one (an event's command).
    """

    message_id: str = msgspec.field(default_factory=new_id)
    correlation_id: str = ""
    causation_id: str | None = None
    actor: str = "anonymous"
    occurred_at: datetime = msgspec.field(default_factory=utcnow)
