"""``studio up``'s first admin: when a password is generated, who gets it, and what is printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services import firstadmin, supervisor
from services.identity import app as identity_app

URL = "http://127.0.0.1:8000"


def test_a_password_is_generated_while_no_admin_exists_and_none_is_configured(
    tmp_path: Path,
) -> None:
    admin = firstadmin.generate(tmp_path, None)
    assert admin is not None and len(admin.password) >= 24
    other = firstadmin.generate(tmp_path, None)
    assert other is not None and other.password != admin.password


def test_no_password_is_generated_when_one_is_configured_or_an_admin_exists(
    tmp_path: Path,
) -> None:
    assert firstadmin.generate(tmp_path, "configured password") is None
    firstadmin.marker_path(tmp_path).parent.mkdir(parents=True)
    identity_app.write_marker(firstadmin.marker_path(tmp_path), "created")
    assert firstadmin.generate(tmp_path, None) is None


def test_only_the_identity_service_is_given_the_generated_password(tmp_path: Path) -> None:
    admin = firstadmin.generate(tmp_path, None)
    assert supervisor._admin_env("identity", admin) == {"STUDIO_ADMIN_PASSWORD": admin.password}  # type: ignore[union-attr]
    for name in ("projects", "datasets", "trainer", "exporter", "gateway"):
        assert supervisor._admin_env(name, admin) == {}
    assert supervisor._admin_env("identity", None) == {}


def test_the_marker_is_where_the_identity_service_writes_it(tmp_path: Path) -> None:
    assert Path(identity_app.SERVICE) / identity_app.ADMIN_MARKER == firstadmin.MARKER
    path = firstadmin.marker_path(tmp_path)
    path.parent.mkdir(parents=True)
    assert firstadmin.outcome(tmp_path, timeout=0) is None
    identity_app.write_marker(path, "existed")  # the loser of a race wrote first...
    assert firstadmin.outcome(tmp_path, timeout=0) == "existed"
    identity_app.write_marker(path, "created")  # ...and the winner's word stands
    identity_app.write_marker(path, "existed")  # a later start changes nothing
    assert firstadmin.outcome(tmp_path, timeout=0) == "created"
    assert json.loads(path.read_text())["admin"] == "admin"
    assert sorted(p.name for p in path.parent.iterdir()) == ["admin.created"]


def test_a_created_admin_is_announced_once_with_its_password_and_the_sign_in_line() -> None:
    admin = firstadmin.FirstAdmin(password="s3cret-generated")
    text = firstadmin.announcement(URL, admin, "created")
    assert "user:      admin" in text and "password:  s3cret-generated" in text
    assert f"curl -s -d username=admin -d password=s3cret-generated {URL}/api/v1/auth/token" in text


@pytest.mark.parametrize("result", ["existed", None])
def test_a_configured_or_existing_admin_password_is_never_printed(result: str | None) -> None:
    assert "s3cret" not in firstadmin.announcement(URL, None, result)
    assert "<password>" in firstadmin.announcement(URL, None, result)
    existed = firstadmin.announcement(URL, firstadmin.FirstAdmin("s3cret"), "existed")
    assert "s3cret" not in existed and "already exists" in existed


def test_an_unconfirmed_admin_still_gets_its_password_shown() -> None:
    text = firstadmin.announcement(URL, firstadmin.FirstAdmin("s3cret"), None)
    assert "not confirmed" in text and "password:  s3cret" in text
