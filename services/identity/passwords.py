"""Passwords and secrets: argon2 hashes sealed with the service's own key, and fresh secrets.

A password is hashed with argon2id (``argon2.PasswordHasher``) and the hash is sealed with
``nacl.secret.SecretBox`` under a 32-byte key that only the identity service reads, so the
events that carry it give no reader of the stream (the gateway, a log, a backup) anything to
crack offline. Verification always runs argon2, against a dummy hash when there is no user, so
that timing does not tell an unknown user from a wrong password.

The key lives in a file: ``STUDIO_IDENTITY_KEY_FILE`` when set, else ``seal.key`` in the
service's data folder, generated on first start with mode 0600. Imports the standard library,
argon2 and nacl only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import nacl.exceptions
import nacl.secret
import nacl.utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger(__name__)

KEY_FILE_ENV = "STUDIO_IDENTITY_KEY_FILE"
KEY_FILE_NAME = "seal.key"
#: Random bytes in a refresh token or an API key's secret (≥ 32: not guessable, ever).
SECRET_BYTES = 32


class Passwords(Protocol):
    """The port the handlers hash, seal and verify passwords through (slow: call it off-loop)."""

    def seal(self, password: str) -> bytes: ...

    def verify(self, seal: bytes | None, password: str) -> bool: ...


class SealedArgon2:
    """argon2id hashes, sealed with ``key``; ``hasher`` may be made cheap for tests only."""

    def __init__(self, key: bytes, hasher: PasswordHasher | None = None) -> None:
        self._box = nacl.secret.SecretBox(key)
        self._hasher = hasher or PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_urlsafe(SECRET_BYTES))

    def seal(self, password: str) -> bytes:
        return bytes(self._box.encrypt(self._hasher.hash(password).encode()))

    def verify(self, seal: bytes | None, password: str) -> bool:
        """Whether ``password`` is the sealed one; with no seal, the same work and False."""
        if seal is None:
            self._check(self._dummy, password)
            return False
        try:
            hashed = self._box.decrypt(seal).decode()
        except nacl.exceptions.CryptoError:
            # Sealed under another key (the key file was replaced): no password can match.
            log.error(
                "a password seal does not open with this key; is %s the right key?", KEY_FILE_ENV
            )
            self._check(self._dummy, password)
            return False
        return self._check(hashed, password)

    def _check(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False


def new_secret() -> str:
    """A fresh random secret (refresh token, API key secret), URL-safe."""
    return secrets.token_urlsafe(SECRET_BYTES)


def digest(secret: str) -> str:
    """What is stored of a secret: its sha256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def load_key(data_dir: Path, named: Path | None = None) -> bytes:
    """The sealing key: from the file ``named`` (``STUDIO_IDENTITY_KEY_FILE``), which must
    exist, else from ``seal.key`` in ``data_dir``, generated on first start."""
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            # Never generate a key where an operator named one: every stored seal would be lost.
            raise SystemExit(f"{KEY_FILE_ENV} names {path}, which is not a file")
        return read_key(path)
    return load_or_create_key(data_dir / KEY_FILE_NAME)


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte sealing key in ``path``, written there (mode 0600) if it does not exist.

    Two processes starting at once agree on one key: the new key is written to a private
    temporary file and linked into place, which fails for the loser, who reads the winner's."""
    if not path.exists():
        _create_key(path)
    return read_key(path)


def read_key(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); chmod 600 it", path, mode)
    return _parse_key(path.read_bytes(), path)


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(base64.urlsafe_b64encode(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)))
            out.write(b"\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another instance wrote it first: use theirs
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _parse_key(raw: bytes, path: Path) -> bytes:
    """32 raw bytes, or their base64 (either alphabet) or hex, with surrounding whitespace."""
    size = nacl.secret.SecretBox.KEY_SIZE
    if len(raw) == size:
        return raw
    text = raw.strip()
    decoders: tuple[Callable[[str], bytes], ...] = (
        bytes.fromhex,
        base64.urlsafe_b64decode,
        base64.b64decode,
    )
    for decode in decoders:
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if len(key) == size:
            return bytes(key)
    raise SystemExit(
        f"{path} does not hold a {size}-byte key (raw, hex or base64); "
        f"remove it to have one generated, or point {KEY_FILE_ENV} at a valid one"
    )
