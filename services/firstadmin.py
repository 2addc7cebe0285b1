"""``studio up``'s first admin: a generated password when none is configured, shown once.

The identity service creates the user ``admin`` from ``STUDIO_ADMIN_PASSWORD`` on start when no
admin exists yet, and records that it exists in ``<workspace>/identity/admin.created``. While
that marker is absent and no password is configured, ``studio up`` generates a strong one,
passes it to the identity service alone, and, once the service confirms it created the admin
with it, prints it with the line that signs in. A configured password is never printed.
Imports the standard library only.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

ADMIN = "admin"
PASSWORD_ENV = "STUDIO_ADMIN_PASSWORD"
#: Where the identity service records the first admin (its data folder, ``admin.created``).
MARKER = Path("identity") / "admin.created"


@dataclass(frozen=True)
class FirstAdmin:
    """The password ``studio up`` generated for the first admin (never a configured one)."""

    password: str

    def env(self) -> dict[str, str]:
        """What the identity service's environment gains (and no other service's)."""
        return {PASSWORD_ENV: self.password}


def marker_path(workspace: Path) -> Path:
    return workspace / MARKER


def generate(workspace: Path, configured: str | None) -> FirstAdmin | None:
    """A new password for the first admin, unless one is configured or an admin exists."""
    if configured or marker_path(workspace).exists():
        return None
    return FirstAdmin(password=secrets.token_urlsafe(18))


def outcome(workspace: Path, timeout: float, poll: float = 0.2) -> str | None:
    """ "created" or "existed" once the identity service has recorded the first admin; None
    if it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    path = marker_path(workspace)
    while True:
        try:
            return str(json.loads(path.read_text())["outcome"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not there yet, or being written
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def sign_in_line(url: str, password: str = "<password>") -> str:
    return f"curl -s -d username={ADMIN} -d password={password} {url}/api/v1/auth/token"


def announcement(url: str, admin: FirstAdmin | None, result: str | None) -> str:
    """What ``studio up`` prints about signing in, once the studio is healthy."""
    if admin is None:
        return f"  Sign in:  {sign_in_line(url)}\n"
    if result == "created":
        return (
            "  The first admin was created. Its password is shown this once: keep it safe.\n"
            f"    user:      {ADMIN}\n"
            f"    password:  {admin.password}\n"
            f"  Sign in:  {sign_in_line(url, admin.password)}\n"
        )
    if result == "existed":
        return (
            f"  An admin already exists in this event store; sign in with its password.\n"
            f"  Sign in:  {sign_in_line(url)}\n"
        )
    return (
        "  The identity service has not confirmed the first admin yet (see its log). When it\n"
        "  creates it, this will be its password, shown this once:\n"
        f"    user:      {ADMIN}\n"
        f"    password:  {admin.password}\n"
        f"  Sign in:  {sign_in_line(url, admin.password)}\n"
    )
