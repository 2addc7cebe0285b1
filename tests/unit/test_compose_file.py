"""``docker-compose.yml`` against the Compose Specification's own JSON Schema (vendored from
compose-spec/compose-spec, Apache-2.0, in tests/vendor/compose-spec): no ``docker compose`` is
needed to know that the file a user starts the studio with is one Compose accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "vendor" / "compose-spec" / "compose-spec.json"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def problems(document: dict[str, Any]) -> list[str]:
    validator = jsonschema_rs.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_compose_file_follows_the_compose_specification():
    assert problems(compose()) == []


def test_the_schema_catches_a_mistake_in_a_service():
    # given the same file with a service whose ports are a mapping, which Compose refuses
    broken = compose()
    broken["services"]["gateway"]["ports"] = {"8000": 8000}
    broken["services"]["grafana"]["restartt"] = "always"
    # then the check says where
    found = problems(broken)
    assert any(p.startswith("services/gateway/ports") for p in found), found
    assert any("restartt" in p for p in found), found


def test_every_file_the_compose_file_mounts_is_in_the_repository():
    # given every bind mount of a file or folder of this repository
    sources = [
        volume.split(":", 1)[0]
        for service in compose()["services"].values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str) and volume.startswith("./")
    ]
    # then each exists, except the user's own imports folder
    missing = [s for s in sources if s != "./imports" and not (ROOT / s).exists()]
    assert sources and missing == []
