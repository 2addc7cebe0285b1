"""Sealed argon2 passwords and the sealing key file: what is stored cannot be cracked without the
key, the key file is private, and two processes starting at once agree on one key."""

from __future__ import annotations

import base64
import stat
import threading
from pathlib import Path
from typing import Literal

import nacl.utils
import pytest
from argon2 import PasswordHasher

from services.identity.passwords import (
    KEY_FILE_NAME,
    SealedArgon2,
    digest,
    load_key,
    load_or_create_key,
    new_secret,
)

#: Cheap argon2 parameters: the tests check the logic, not the cost.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
KEY = nacl.utils.random(32)


def test_a_sealed_password_verifies_and_a_wrong_one_does_not() -> None:
    passwords = SealedArgon2(KEY, FAST)
    seal = passwords.seal("correct horse")
    assert passwords.verify(seal, "correct horse")
    assert not passwords.verify(seal, "wrong horse")


def test_the_seal_holds_no_argon2_hash_in_the_clear() -> None:
    seal = SealedArgon2(KEY, FAST).seal("correct horse")
    assert b"$argon2" not in seal
    assert b"$argon2" not in base64.b64encode(seal)
    assert b"correct horse" not in seal


def test_two_seals_of_one_password_differ() -> None:
    passwords = SealedArgon2(KEY, FAST)
    assert passwords.seal("correct horse") != passwords.seal("correct horse")


def test_without_a_seal_verification_does_the_work_and_fails() -> None:
    calls: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            calls.append("verify")
            return super().verify(hash, password)

    passwords = SealedArgon2(KEY, Counting(time_cost=1, memory_cost=8, parallelism=1))
    assert not passwords.verify(None, "anything at all")
    assert calls == ["verify"]  # an unknown user costs one argon2 verify, like a known one


def test_a_seal_under_another_key_never_verifies() -> None:
    seal = SealedArgon2(KEY, FAST).seal("correct horse")
    assert not SealedArgon2(nacl.utils.random(32), FAST).verify(seal, "correct horse")
    assert not SealedArgon2(KEY, FAST).verify(b"garbage", "correct horse")


def test_secrets_are_long_random_and_stored_as_their_sha256() -> None:
    one, two = new_secret(), new_secret()
    assert one != two and len(one) >= 43  # 32 random bytes, base64url
    assert digest(one) == digest(one) != digest(two)
    assert len(digest(one)) == 64 and one not in digest(one)


def test_the_key_file_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "identity" / KEY_FILE_NAME
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keys.append(load_or_create_key(path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


@pytest.mark.parametrize(
    "encode",
    [lambda k: k, bytes.hex, base64.b64encode, base64.urlsafe_b64encode],
    ids=["raw", "hex", "base64", "base64url"],
)
def test_a_named_key_file_may_be_raw_hex_or_base64(tmp_path: Path, encode: object) -> None:
    path = tmp_path / "my.key"
    written = encode(KEY)  # type: ignore[operator]
    path.write_bytes(written if isinstance(written, bytes) else written.encode() + b"\n")
    assert load_key(tmp_path / "unused", path) == KEY
    assert not (tmp_path / "unused" / KEY_FILE_NAME).exists()


def test_a_named_key_file_that_is_missing_or_wrong_stops_the_service(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a file"):
        load_key(tmp_path, tmp_path / "missing.key")
    (tmp_path / "short.key").write_text("abcd\n")
    with pytest.raises(SystemExit, match="32-byte key"):
        load_key(tmp_path, tmp_path / "short.key")
