"""The committed locks decide every version a fresh install gets, and they satisfy the ranges
that ``pyproject.toml`` declares.

``requirements.lock`` is what the services run on (the Docker image installs it);
``requirements-dev.lock`` adds the test and lint tools (``make up``/``make test`` install it).
Both are written by ``make lock``; an upstream release changes nothing until that is run and
committed.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME, DEV = ROOT / "requirements.lock", ROOT / "requirements-dev.lock"
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?:\s*;(?P<marker>[^\\]+))?"
)


class Pin:
    def __init__(self, name: str, version: str, marker: str | None, hashes: list[str]) -> None:
        self.name, self.version, self.hashes = canonicalize_name(name), Version(version), hashes
        self.marker = Marker(marker.strip()) if marker else None

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def pins(path: Path) -> list[Pin]:
    """Every pinned entry of a lock, with its hashes (continuation lines)."""
    found: list[Pin] = []
    for line in path.read_text("utf-8").splitlines():
        if match := _PIN.match(line):
            found.append(Pin(match["name"], match["version"], match["marker"], []))
        elif line.strip().startswith("--hash=") and found:
            found[-1].hashes.append(line.strip().removeprefix("--hash=").rstrip(" \\"))
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"{path.name}: not a pin, hash or comment: {line!r}")
    return found


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return [Requirement(r) for r in wanted]


def applicable(lock: list[Pin]) -> dict[str, Version]:
    return {p.name: p.version for p in lock if p.applies()}


@pytest.mark.parametrize(
    ("lock", "extras"), [(RUNTIME, ()), (DEV, ("dev",))], ids=["runtime", "dev"]
)
def test_the_lock_satisfies_every_declared_range(lock: Path, extras: tuple[str, ...]) -> None:
    locked = applicable(pins(lock))
    for requirement in declared(*extras):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is declared in pyproject.toml but not in {lock.name}"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock.name} pins {name}=={locked[name]}, outside pyproject.toml's "
            f"{requirement.specifier}: run `make lock`"
        )


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=["runtime", "dev"])
def test_every_entry_is_an_exact_version_with_hashes(lock: Path) -> None:
    entries = pins(lock)
    assert len(entries) > 20
    for pin in entries:
        assert pin.hashes, f"{lock.name}: {pin.name} has no hash"
        assert all(h.startswith("sha256:") and len(h) == 71 for h in pin.hashes), pin.name


def test_the_runtime_lock_is_the_dev_lock_less_the_tools() -> None:
    dev = {(p.name, str(p.marker)): p.version for p in pins(DEV)}
    for pin in pins(RUNTIME):
        assert dev.get((pin.name, str(pin.marker))) == pin.version, (
            f"{pin.name}: the runtime lock and the dev lock disagree; run `make lock`"
        )


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=["runtime", "dev"])
def test_a_lock_names_no_index_or_machine_path(lock: Path) -> None:
    text = lock.read_text("utf-8")
    for needle in ("--index-url", "--extra-index-url", "--find-links", "file:", "/home/", "/opt/"):
        assert needle not in text, f"{lock.name} names {needle!r}"


def test_this_environment_was_installed_from_the_dev_lock() -> None:
    wrong = []
    for name, version in applicable(pins(DEV)).items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} is not installed")
            continue
        if installed != version:
            wrong.append(f"{name} {installed} installed, {version} locked")
    assert not wrong, "reinstall from the lock (rm .venv/.installed; make test): " + "; ".join(
        wrong
    )


def test_every_install_path_installs_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text("utf-8")
    assert "--require-hashes -r $(DEVLOCK)" in makefile
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "pip install ." not in dockerfile.replace("--no-deps --no-build-isolation .", "")
