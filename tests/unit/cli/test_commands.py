"""The shape of the ``studio`` command: help with examples everywhere, shell completion,
the operator's ``up``/``ping``/``rebuild`` as they always were, and where the credential
comes from. No studio runs here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from services import cli as services_cli
from services.cli import cli
from studio_client.cli import config
from studio_client.cli.errors import AUTH, Failure
from studio_client.cli.state import State
from studio_client.models import Session

CLEAN = {"STUDIO_URL": None, "STUDIO_TOKEN": None, "STUDIO_API_KEY": None}
OPERATOR = ("up", "ping", "rebuild")


@pytest.fixture(autouse=True)
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in CLEAN:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


@pytest.mark.parametrize("path", sorted(commands(cli)), ids=" ".join)
def test_every_command_has_help_with_examples(path: tuple[str, ...]) -> None:
    done = CliRunner().invoke(cli, [*path, "--help"])
    assert done.exit_code == 0, done.output
    assert f"Usage: studio {' '.join(path)}" in done.output
    assert "Example" in done.output
    if path[0] not in OPERATOR and "Commands:" not in done.output:
        assert "--json" in done.output


def test_the_top_level_help_shows_how_to_complete_and_the_exit_codes() -> None:
    done = CliRunner().invoke(cli, ["--help"])
    assert "_STUDIO_COMPLETE=bash_source studio" in done.output
    assert "Exit codes:" in done.output


def test_shell_completion_is_clicks_own() -> None:
    script = CliRunner().invoke(
        cli, [], prog_name="studio", env={"_STUDIO_COMPLETE": "bash_source"}
    )
    assert "_studio_completion" in script.output
    env = {"_STUDIO_COMPLETE": "bash_complete", "COMP_WORDS": "studio ru", "COMP_CWORD": "1"}
    words = CliRunner().invoke(cli, [], prog_name="studio", env=env)
    assert "plain,runs" in words.output.splitlines()


def test_up_takes_the_options_it_always_took(monkeypatch: pytest.MonkeyPatch) -> None:
    from services import supervisor

    seen: dict[str, Any] = {}

    def up(host: str, port: int, workspace: Path) -> int:
        seen.update(host=host, port=port, workspace=workspace)
        return 0

    monkeypatch.setattr(supervisor, "up", up)
    monkeypatch.delenv("STUDIO_IMPORT_ROOTS", raising=False)
    args = ["up", "--host", "0.0.0.0", "--port", "8123", "--workspace", "/tmp/ws"]
    args += ["--import-root", "/data/a", "--import-root", "/data/b"]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert seen == {"host": "0.0.0.0", "port": 8123, "workspace": Path("/tmp/ws")}
    assert os.environ["STUDIO_IMPORT_ROOTS"] == os.pathsep.join(["/data/a", "/data/b"])
    monkeypatch.delenv("STUDIO_IMPORT_ROOTS")


def test_a_failed_start_is_exit_2_with_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from services import supervisor

    def refuse(*_: Any) -> int:
        raise supervisor.StartupError("Port 8000 is already in use")

    monkeypatch.setattr(supervisor, "up", refuse)
    done = CliRunner().invoke(cli, ["up"])
    assert done.exit_code == 2
    assert done.stderr == "studio: Port 8000 is already in use\n"


def test_rebuild_names_its_services_and_drops_a_stopped_ones_model(tmp_path: Path) -> None:
    bad = CliRunner().invoke(cli, ["rebuild", "nobody", "--workspace", str(tmp_path)])
    assert bad.exit_code == 2 and "'nobody' is not one of" in bad.stderr
    model = tmp_path / services_cli.READ_MODELS["trainer"]
    model.parent.mkdir(parents=True)
    model.write_bytes(b"x")
    done = CliRunner().invoke(cli, ["rebuild", "trainer", "--workspace", str(tmp_path)])
    assert done.exit_code == 0 and not model.exists()
    assert "trainer is not running" in done.stdout


def test_a_user_command_without_a_credential_says_how_to_sign_in() -> None:
    done = CliRunner().invoke(cli, ["runs", "list", "--json"])
    assert done.exit_code == AUTH
    assert done.stdout == ""
    assert "not signed in" in done.stderr and "studio login --url" in done.stderr


def test_an_api_key_in_the_environment_is_used_before_the_stored_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config.save(config.Credentials(url="http://stored", access_token="old"))
    monkeypatch.setenv("STUDIO_API_KEY", "sk_env")
    state = State()
    client = state.client()
    assert client.transport.credentials() == {"X-API-Key": "sk_env"}
    assert client.base_url.startswith("http://stored")
    state.close()


def test_a_session_refreshed_during_a_command_is_kept_for_the_next() -> None:
    config.save(
        config.Credentials(url="http://s", user="ann", access_token="a1", refresh_token="r1")
    )
    state = State()
    client = state.client()
    assert client.transport.credentials() == {"Authorization": "Bearer a1"}
    client.transport.signed_in(Session(access_token="a2", refresh_token="r2"))  # as a refresh does
    state.close()
    assert config.load() == config.Credentials(
        url="http://s", user="ann", access_token="a2", refresh_token="r2"
    )


def test_a_session_of_another_studio_is_not_sent_to_this_one() -> None:
    config.save(config.Credentials(url="http://one", access_token="a"))
    with pytest.raises(Failure, match="signed in at http://one") as caught:
        State("http://two").client()
    assert caught.value.exit_code == AUTH
