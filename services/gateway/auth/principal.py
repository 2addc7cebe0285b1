"""Who is asking: the principal a request was authenticated as. A plain frozen value, so that
routes, access checks and streams can pass it around; imports the standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

ADMIN: Final = "admin"


@dataclass(frozen=True)
class Principal:
    """A signed-in user, as one credential proved them."""

    user_id: str
    #: ``"admin"`` or ``"user"``.
    site_role: str
    #: ``"free"``, ``"basic"`` or ``"premium"``: the rate-limit tier.
    tier: str
    #: How the request proved it: ``"token"`` (an access token), ``"api_key"`` or ``"stream"``
    #: (a short-lived stream token in an SSE or WebSocket URL).
    via: str
    #: The sign-in session behind a token; ``None`` for an API key.
    session_id: str | None
    #: When the credential stops working; ``None`` for an API key without expiry.
    expires_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.site_role == ADMIN
