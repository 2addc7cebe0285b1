"""The stored credential: private from its first byte, written whole, read back as written."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio_client.cli import config


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the loosest a user may have: the file must still be private
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_saved_credential_is_readable_by_its_owner_only(home: Path, open_umask: None) -> None:
    # given no config folder yet, when a session is saved
    path = config.save(config.Credentials(url="http://s", user="ann", access_token="a"))
    # then it is in $XDG_CONFIG_HOME/ai-studio, the file 0600 and its folder 0700
    assert path == home / "xdg" / "ai-studio" / "credentials.json"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    # and nothing else is left beside it
    assert [p.name for p in path.parent.iterdir()] == ["credentials.json"]


def test_what_is_saved_is_loaded_and_a_new_save_replaces_it(open_umask: None) -> None:
    first = config.Credentials(url="http://s", user="ann", access_token="a", refresh_token="r")
    config.save(first)
    assert config.load() == first
    second = config.Credentials(url="http://t", api_key="sk_x")
    config.save(second)
    assert config.load() == second
    assert mode(config.credentials_path()) == 0o600
    assert "access_token" not in config.credentials_path().read_text()  # defaults left out


def test_a_file_loosened_by_hand_is_made_private_again_when_read() -> None:
    path = config.save(config.Credentials(url="http://s", access_token="a"))
    path.chmod(0o644)
    assert config.load() is not None
    assert mode(path) == 0o600


def test_no_file_or_a_broken_one_is_no_credential() -> None:
    assert config.load() is None
    config.credentials_path().parent.mkdir(parents=True)
    config.credentials_path().write_text("{not json")
    assert config.load() is None


def test_clear_forgets_it_once() -> None:
    config.save(config.Credentials(url="http://s", access_token="a"))
    assert config.clear() is True
    assert config.load() is None and config.clear() is False


def test_without_xdg_config_home_it_is_under_home_dot_config(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(home))
    assert config.credentials_path() == home / ".config" / "ai-studio" / "credentials.json"


def test_signed_in_needs_a_token_or_a_key() -> None:
    assert not config.Credentials(url="http://s").signed_in
    assert config.Credentials(url="http://s", api_key="k").signed_in
