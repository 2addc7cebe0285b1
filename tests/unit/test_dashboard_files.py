"""The monitoring files of deploy/ agree with each other: Prometheus' config is valid and
scrapes every service, Grafana is provisioned in compose with the dashboard and its
datasource, and the dashboard is laid out on Grafana's grid.

What the dashboard's queries answer is proven against a real Prometheus in
``tests/integration/test_dashboards.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.kernel.gpu import Nvml, register_gpu_collector
from tests.stack import SERVICES
from tests.unit.kernel.test_gpu import H200, FakeNvml, loader

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/studio.json"
PROVISIONING = ROOT / "deploy/grafana/provisioning"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
PROMTOOL = Path("/usr/bin/promtool")
GRID_COLUMNS = 24


def load(path: Path) -> Any:
    return (
        json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    )


def grafana_service() -> dict[str, Any]:
    return load(COMPOSE)["services"]["grafana"]


def mounts() -> dict[str, str]:
    """Host folder → container path of Grafana's bind mounts."""
    binds = [v for v in grafana_service()["volumes"] if v.startswith("./")]
    return dict(v.rsplit(":", 2)[:2] for v in binds)


def datasource() -> dict[str, Any]:
    (source,) = load(PROVISIONING / "datasources/prometheus.yml")["datasources"]
    return source


def test_prometheus_scrapes_the_gateway_and_every_service() -> None:
    config = load(PROMETHEUS_CONFIG)
    scraped = [
        static["labels"]["service"]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
    ]
    assert sorted(scraped) == sorted({*SERVICES, "gateway"})


def test_promtool_accepts_the_prometheus_config() -> None:
    if not PROMTOOL.exists():
        pytest.skip(f"{PROMTOOL} is not installed (make test installs Debian's prometheus)")
    done = subprocess.run(
        [str(PROMTOOL), "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_in_compose_is_pinned_closed_to_strangers_and_reads_its_files_only() -> None:
    grafana = grafana_service()
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", grafana["image"])
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    # no default password: compose refuses to start without one
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert all(v.endswith(":ro") for v in grafana["volumes"] if v.startswith("./"))
    assert mounts()["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert "3000:3000" in grafana["ports"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{mounts()[f'./{DASHBOARD.parent.relative_to(ROOT)}']}/{DASHBOARD.name}"


def test_the_dashboard_provider_reads_the_folder_the_dashboard_is_mounted_at() -> None:
    (provider,) = load(PROVISIONING / "dashboards/studio.yml")["providers"]
    assert provider["type"] == "file"
    assert mounts()[f"./{DASHBOARD.parent.relative_to(ROOT)}"] == provider["options"]["path"]


def test_the_datasource_is_the_compose_prometheus_at_its_scrape_interval() -> None:
    source = datasource()
    url = httpx.URL(source["url"])
    assert source["type"] == "prometheus"
    assert url.host == "prometheus" and "prometheus" in load(COMPOSE)["services"]
    assert f"{url.port}:{url.port}" in load(COMPOSE)["services"]["prometheus"]["ports"]
    # Grafana sizes $__rate_interval from it: it must be Prometheus' own interval
    assert (
        source["jsonData"]["timeInterval"] == load(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    )


def test_every_panel_reads_the_provisioned_datasource() -> None:
    board = load(DASHBOARD)
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == datasource()["uid"]
    named = {"type": "prometheus", "uid": "${datasource}"}
    for panel in board["panels"]:
        for part in [panel, *panel.get("targets", [])]:
            assert part.get("datasource", named) == named, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]


def test_the_dashboard_is_laid_out_on_the_grid_without_overlaps() -> None:
    board = load(DASHBOARD)
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 41
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    for wanted in ("Training", "Queue", "GPU", "Bus", "HTTP", "Imports", "export", "Live clients"):
        assert any(wanted in row for row in rows), (wanted, rows)


def test_every_rate_uses_grafanas_rate_interval_or_the_range() -> None:
    for panel in load(DASHBOARD)["panels"]:
        for target in panel.get("targets", []):
            windows = re.findall(r"\[([^\]]+)\]", target["expr"])
            assert set(windows) <= {"$__rate_interval", "$__range"}, (panel["title"], windows)


def test_the_gpu_panels_read_what_the_gpu_collector_serves() -> None:
    # The GPU panels are exempt from the live proof on a machine without a GPU: here they read
    # the collector's own scrape of a (fake) H200, names and grouping labels.
    registry = CollectorRegistry()
    register_gpu_collector(registry, Nvml(loader(FakeNvml([H200]))))
    served = {
        sample.name: set(sample.labels)
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    gpu_targets = [
        target["expr"]
        for panel in load(DASHBOARD)["panels"]
        for target in panel.get("targets", [])
        if "studio_gpu_" in target["expr"]
    ]
    assert len(gpu_targets) >= 4
    for expr in gpu_targets:
        (name,) = re.findall(r"studio_gpu_\w+", expr)
        assert name in served, expr
        for by in re.findall(r"by \(([^)]*)\)", expr):
            assert {label.strip() for label in by.split(",")} <= served[name], expr
