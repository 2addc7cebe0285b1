"""The settings object: defaults, the environment, a ``.env`` file, refusals of bad values that
name their variable, the JWT secret generated once (mode 0600, whoever starts first), and what
production refuses."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.kernel import settings as s
from services.kernel.settings import Settings

STRONG = "x" * 48


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``STUDIO_*`` variable of the caller's, no ``.env`` of the repository's."""
    for name in list(os.environ):
        if name.startswith("STUDIO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))
    return tmp_path


def test_the_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    settings = Settings.from_env(default_services=("projects", "datasets"))
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.workspace == (tmp_path / "ws").resolve()
    assert settings.services == ("projects", "datasets")
    assert (settings.stream_replicas, settings.connect_timeout) == (1, 10.0)
    assert (settings.request_timeout, settings.responder_wait) == (5.0, 5.0)
    assert settings.upload_max_bytes == 2 * 1024**3
    assert settings.auto_resume is True
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 8000, "info")
    assert settings.env == "development" and settings.docs_enabled is True
    assert settings.access_token_minutes == 30 and settings.refresh_token_days == 14
    assert settings.stream_token_seconds == 120
    assert settings.rate_limits == {
        "free": "10/minute",
        "basic": "100/minute",
        "premium": "1000/minute",
        "anonymous": "60/minute",
    }
    assert settings.login_rate_limit == "5/minute"
    assert settings.cors_origins == ()
    assert settings.nats_creds is None and settings.admin_password is None


def test_every_field_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [s.variable(name) for name in Settings.model_fields if s.variable(name) not in readme]
    assert missing == []


def test_the_environment_sets_each_kind_of_value(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "STUDIO_NATS_CONNECT_TIMEOUT": "2.5",
        "STUDIO_STREAM_REPLICAS": "3",
        "STUDIO_AUTO_RESUME": "off",
        "STUDIO_SERVICES": " projects , trainer ,",
        "STUDIO_IMPORT_ROOTS": os.pathsep.join(["/srv/a", "/srv/b"]),
        "STUDIO_CORS_ORIGINS": "https://a.example,https://b.example",
        "STUDIO_LOG_LEVEL": "DEBUG",
        "STUDIO_TRAINER_SLOT": "gpu-box-0",
        "STUDIO_RATE_LIMIT_FREE": "20 per minute",
        "STUDIO_METRICS_PORT": "",  # empty is unset, as before
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(default_services=("ignored",))
    assert settings.connect_timeout == 2.5 and settings.stream_replicas == 3
    assert settings.auto_resume is False
    assert settings.services == ("projects", "trainer")
    assert settings.import_roots == (Path("/srv/a"), Path("/srv/b"))
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.log_level == "debug" and settings.slot == "gpu-box-0"
    assert settings.rate_limits["free"] == "20 per minute"
    assert settings.metrics_port == 0


def test_a_dotenv_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "STUDIO_REQUEST_TIMEOUT=7\nSTUDIO_PAGE_SIZE_MAX=50\nOTHER_TOOL_SETTING=1\n"
    )
    monkeypatch.setenv("STUDIO_PAGE_SIZE_MAX", "40")
    settings = Settings.from_env()
    assert settings.request_timeout == 7.0
    assert settings.page_size_max == 40


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STUDIO_REQUEST_TIMEOUT", "soon"),
        ("STUDIO_NATS_CONNECT_TIMEOUT", "-1"),
        ("STUDIO_STREAM_REPLICAS", "2.5"),
        ("STUDIO_AUTO_RESUME", "perhaps"),
        ("STUDIO_ENV", "staging"),
        ("STUDIO_RATE_LIMIT_FREE", "lots"),
        ("STUDIO_MAX_BODY_BYTES", "10"),
        ("STUDIO_PORT", "70000"),
    ],
)
def test_a_bad_value_stops_the_process_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        Settings.from_env()
    assert str(exited.value).startswith(f"{name}: ")
    assert repr(value) in str(exited.value)


def test_the_jwt_secret_is_generated_once_into_the_workspace_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    first = Settings.from_env()
    key = tmp_path / "ws" / "secrets" / "jwt.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert len(first.jwt_secret) >= 64 and key.read_text() == first.jwt_secret
    assert Settings.from_env().jwt_secret == first.jwt_secret
    assert first.jwt_secret not in repr(first)  # never in a log line


def test_a_secret_from_the_environment_is_used_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STUDIO_JWT_SECRET", STRONG)
    assert Settings.from_env().jwt_secret == STRONG
    assert not (tmp_path / "ws" / "secrets").exists()


def _start(workspace: str, barrier: multiprocessing.synchronize.Barrier, out: str) -> None:
    os.environ["STUDIO_WORKSPACE"] = workspace
    barrier.wait()
    Path(out).write_text(Settings.from_env().jwt_secret)


def test_processes_starting_at_once_all_read_the_one_secret_written(tmp_path: Path) -> None:
    starters = 8
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(starters)
    outs = [tmp_path / f"secret-{i}" for i in range(starters)]
    procs = [
        ctx.Process(target=_start, args=(str(tmp_path / "ws"), barrier, str(out))) for out in outs
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    secrets = {out.read_text() for out in outs}
    key = tmp_path / "ws" / "secrets" / "jwt.key"
    assert secrets == {key.read_text()}
    assert [p.name for p in key.parent.iterdir()] == ["jwt.key"]  # no candidate left behind


def test_an_empty_secret_file_is_refused_rather_than_signing_with_nothing(
    tmp_path: Path,
) -> None:
    key = tmp_path / "ws" / "secrets" / "jwt.key"
    key.parent.mkdir(parents=True)
    key.write_text("\n")
    with pytest.raises(SystemExit, match="is empty"):
        Settings.from_env()


def production(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The refusal message of a production start with ``env`` (empty when it starts)."""
    monkeypatch.setenv("STUDIO_ENV", "production")
    for name, value in env.items():
        monkeypatch.setenv(f"STUDIO_{name}", value)
    try:
        Settings.from_env()
    except SystemExit as exc:
        return str(exc)
    return ""


def test_production_starts_with_a_generated_secret_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert production(monkeypatch) == ""
    assert Settings.from_env().docs_enabled is False  # off unless asked for (then refused)


@pytest.mark.parametrize("secret", ["changeme", "secret", "short-but-not-a-placeholder"])
def test_production_refuses_a_placeholder_or_short_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    refusal = production(monkeypatch, JWT_SECRET=secret)
    assert "STUDIO_ENV=production refuses to start" in refusal
    assert "STUDIO_JWT_SECRET" in refusal


@pytest.mark.parametrize("password", ["changeme", "admin", "Password"])
def test_production_refuses_a_placeholder_admin_password(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    assert "STUDIO_ADMIN_PASSWORD" in production(monkeypatch, ADMIN_PASSWORD=password)
    assert production(monkeypatch, ADMIN_PASSWORD="a-real-passphrase-of-some-length") == ""


def test_production_refuses_the_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "STUDIO_DOCS_ENABLED" in production(monkeypatch, DOCS_ENABLED="1")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "studio.example.com"])
def test_production_refuses_a_public_bind_without_tls_in_front(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    assert f"STUDIO_HOST={host}" in production(monkeypatch, HOST=host)
    assert production(monkeypatch, HOST=host, TLS_TERMINATED="1") == ""


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses_need_no_tls(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    assert production(monkeypatch, HOST=host) == ""


def test_production_refuses_a_secret_file_others_can_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Settings.from_env()
    (tmp_path / "ws" / "secrets" / "jwt.key").chmod(0o644)
    assert "chmod 600" in production(monkeypatch)


def test_production_lists_every_refusal_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = production(monkeypatch, JWT_SECRET="changeme", DOCS_ENABLED="1", HOST="0.0.0.0")
    assert refusal.count("\n  - ") == 3


def test_development_allows_what_production_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_JWT_SECRET", "dev")
    monkeypatch.setenv("STUDIO_HOST", "0.0.0.0")
    assert Settings.from_env().jwt_secret == "dev"


def test_a_process_started_in_production_with_a_placeholder_exits_with_the_message(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env |= {"STUDIO_ENV": "production", "STUDIO_JWT_SECRET": "changeme"}
    env["STUDIO_WORKSPACE"] = str(tmp_path / "ws")
    code = "from services import deployment; deployment.settings()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "STUDIO_JWT_SECRET is a placeholder" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_fault_hook_is_armed_from_the_settings_and_still_honours_the_environment() -> None:
    code = (
        "from services.trainer.engine import faults\n"
        "faults.arm({spec!r})\n"
        "faults.fault_point('after_upload', 2)\n"
        "print('alive')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "STUDIO_FAULT_POINT"}
    armed = subprocess.run([sys.executable, "-c", code.format(spec="after_upload:2")], env=env)
    assert armed.returncode == -9
    # Armed with nothing (the settings' default), the environment's spec is not consulted.
    env["STUDIO_FAULT_POINT"] = "after_upload:2"
    disarmed = subprocess.run(
        [sys.executable, "-c", code.format(spec="")], env=env, capture_output=True, text=True
    )
    assert disarmed.stdout == "alive\n"
