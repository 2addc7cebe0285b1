"""Where ``studio login`` keeps its credential: ``$XDG_CONFIG_HOME/ai-studio/credentials.json``
(``~/.config`` when unset), readable by its owner only (0600, in a 0700 folder).

The file is written whole under a temporary name and renamed into place, so a crash never
leaves half a credential; it is created 0600 from its first byte (never chmodded after the
secret is in it). ``STUDIO_URL``, ``STUDIO_TOKEN`` and ``STUDIO_API_KEY`` override what is
stored, for scripts and CI. Imports the standard library and msgspec only.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import msgspec

__all__ = ["Credentials", "clear", "config_dir", "credentials_path", "load", "save"]

FILE_MODE = 0o600
DIR_MODE = 0o700


class Credentials(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One studio and how to prove who one is to it: a session (access and refresh token)
    from ``studio login``, or an API key."""

    url: str
    user: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    api_key: str | None = None

    @property
    def signed_in(self) -> bool:
        return bool(self.access_token or self.api_key)


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ai-studio"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def load() -> Credentials | None:
    """The stored credential, or ``None`` when there is none (or it is unreadable)."""
    path = credentials_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(FILE_MODE)  # made looser by hand: a secret stays its owner's
    try:
        return msgspec.json.decode(raw, type=Credentials)
    except msgspec.DecodeError:
        return None


def save(credentials: Credentials) -> Path:
    """Store ``credentials`` (replacing what was there) and return the file's path."""
    path = credentials_path()
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".credentials.", dir=path.parent)  # mkstemp: 0600
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(credentials), indent=2) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def clear() -> bool:
    """Forget the stored credential; whether there was one."""
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True
