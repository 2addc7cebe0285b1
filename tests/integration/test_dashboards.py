"""The Grafana dashboard, proven against a real Prometheus scraping a running studio.

Prometheus (Debian's, ``make test`` installs it) scrapes the gateway and every service each
second, with the scrape jobs and labels of ``deploy/prometheus/prometheus.yml``, while the
studio imports, splits, trains, evaluates and exports. Then every target of every panel of
``deploy/grafana/dashboards/studio.json`` is asked of Prometheus as Grafana would ask it (a
range query over the workload for a time series, an instant query at its end for an
``instant`` target) and must answer a number. The GPU panels are exempt where no service sees
a GPU, and the test says so in its warnings.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.kernel.nats_server import free_port
from services.kernel.process import stop_gently
from tests.stack import ADMIN, ADMIN_PASSWORD, SERVICES, Stack
from tests.training_helpers import API, client, learnable_split, run, submit, wait, wait_status

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/studio.json"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
PROMETHEUS = Path("/usr/bin/prometheus")
#: Grafana's own variables, as fixed windows: a rate() window holds 30 one-second scrapes.
RATE_WINDOW = "30s"
#: Series Prometheus makes for each target itself: in no service's ``/metrics``.
SYNTHETIC = {"up"}
#: Series a run's training feeds only while it trains (and the SSE client following it): the
#: run is stopped once Prometheus has scraped each of them twice.
WHILE_TRAINING = (
    "max(count_over_time(studio_training_loss[5m])) >= 2",
    "max(count_over_time(studio_training_accuracy[5m])) >= 2",
    "max(count_over_time(studio_training_images_per_second[5m])) >= 2",
    "max(count_over_time(studio_lease_held[5m])) >= 2",
    "max(max_over_time(studio_runs_running[5m])) > 0",
    "max(max_over_time(studio_live_clients[5m])) > 0",
)
#: What Prometheus must have seen of the jobs that end the workload.
AFTER_JOBS = (
    'sum(studio_exports_total{outcome="completed"}) >= 1',
    'sum(studio_evaluations_total{outcome="completed"}) >= 1',
    'sum(studio_runs_total{outcome="stopped"}) >= 1',
)
_METRIC = re.compile(r"\b(studio_[a-z0-9_]+|up)\b(?!\s*\()")
_VARIABLE = re.compile(r"\$\{?\w+(?::\w+)?\}?")


@dataclass
class Target:
    panel: str
    expr: str
    instant: bool

    def metrics(self) -> set[str]:
        return set(_METRIC.findall(self.expr))


@dataclass
class Workload:
    start: float
    end: float
    #: Every sample name some ``/metrics`` served, while the run trained or once it was over.
    exposed: set[str]


def targets() -> list[Target]:
    found = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for t in panel.get("targets", []):
            found.append(Target(panel["title"], t["expr"], bool(t.get("instant"))))
    return found


def concrete(expr: str, range_s: int) -> str:
    """``expr`` as Grafana sends it: its own variables as fixed windows, the dashboard's
    variables as "All" (``.*``)."""
    expr = expr.replace("$__rate_interval", RATE_WINDOW).replace("$__interval", "5s")
    expr = expr.replace("$__range", f"{range_s}s")
    expr = _VARIABLE.sub(".*", expr)
    assert "$" not in expr, expr
    return expr


def finite(result: list[dict[str, Any]]) -> bool:
    values = [v for series in result for _, v in series.get("values", [series.get("value")])]
    return any(math.isfinite(float(v)) for v in values)


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: Any) -> Any:
        resp = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        assert resp.status_code == 200, f"{params}: {resp.status_code} {resp.text}"
        return resp.json()["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        data = self.get("query", query=expr, **({"time": at} if at else {}))
        return data["result"]

    def answers(self, target: Target, load: Workload) -> bool:
        expr = concrete(target.expr, math.ceil(load.end - load.start) + 5)
        if target.instant:
            return finite(self.query(expr, at=load.end))
        data = self.get("query_range", query=expr, start=load.start, end=load.end, step=1)
        return finite(data["result"])

    def holds(self, *conditions: str) -> list[str]:
        """The conditions that do not hold yet."""
        return [c for c in conditions if not self.query(c)]


def metrics_urls(stack: Stack) -> dict[str, str]:
    """Every service's metrics URL (from its Pong, through ``/health``) and the gateway's."""

    def known() -> dict[str, str] | None:
        with client(stack) as api:
            services = api.get("/health").json()["data"]["services"]
        urls = {name: services.get(name, {}).get("metrics_url") for name in SERVICES}
        return None if None in urls.values() else urls

    return {**wait(known, timeout=30), "gateway": f"{stack.base_url}/metrics"}


def scrape_config(urls: dict[str, str]) -> dict[str, Any]:
    """``deploy/prometheus/prometheus.yml`` with the stack's addresses for its targets and a
    one-second scrape: the same jobs and labels the dashboard reads."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            url = httpx.URL(urls[static["labels"]["service"]])
            static["targets"] = [f"{url.host}:{url.port}"]
            job["metrics_path"] = url.path
    return config


# The whole studio: the shared one (``tests/conftest.py``), whose every series the dashboard
# reads only for data, never for a count, so that other modules' work there changes nothing.


@pytest.fixture(scope="module")
def urls(stack: Stack) -> dict[str, str]:
    return metrics_urls(stack)


@pytest.fixture(scope="module")
def prometheus(
    urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    if not PROMETHEUS.exists():
        pytest.skip(f"{PROMETHEUS} is not installed (make test installs Debian's prometheus)")
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(urls)))
    port = free_port()
    log = (root / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        prom = Prometheus(port)
        wait(lambda: _all_up(prom, proc, root, len(urls)), timeout=30, every=0.2)
        yield prom
    finally:
        stop_gently(proc)
        log.close()


def _all_up(prom: Prometheus, proc: subprocess.Popen[bytes], root: Path, count: int) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"prometheus exited:\n{(root / 'prometheus.log').read_text()[-3000:]}")
    try:
        active = prom.get("targets")["activeTargets"]
    except (httpx.HTTPError, AssertionError):
        return False
    return len(active) == count and all(t["health"] == "up" for t in active)


@pytest.fixture(scope="module")
def workload(stack: Stack, prometheus: Prometheus, urls: dict[str, str]) -> Workload:
    """Sign-ins (one refused, one refreshed), an import and a split, a run followed over SSE
    until Prometheus has seen it train, then stopped, evaluated and exported."""
    start = time.time() - 2
    _sign_ins(stack)
    project_id, split_id = learnable_split(stack, per_class=20, test=0.25)
    resp = submit(stack, project_id, split_id, hyperparameters={"epochs": 1000})
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["data"]["id"]
    follower = Follower(stack, run_id)
    try:
        wait(lambda: run(stack, run_id)["epochs_done"] >= 2, timeout=90)
        pending = _until(prometheus, WHILE_TRAINING, timeout=60)
        exposed = scraped_names(urls)
    finally:
        follower.close()
    assert "epoch_end" in follower.events, follower.events
    with client(stack) as api:
        stopped = api.post(f"{API}/training/runs/{run_id}/stop")
        assert stopped.status_code in (200, 202), stopped.text
    wait_status(stack, run_id, "stopped")
    _job(stack, "evaluation", {"run_id": run_id})
    _job(stack, "export", {"run_id": run_id, "format": "onnx"})
    pending += _until(prometheus, AFTER_JOBS, timeout=30)
    if pending:
        warnings.warn(f"Prometheus never saw: {pending}", stacklevel=1)
    return Workload(start, time.time(), exposed | scraped_names(urls))


def _sign_ins(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=15) as anon:
        refused = anon.post(f"{API}/auth/token", data={"username": ADMIN, "password": "wrong"})
        assert refused.status_code == 401, refused.text
        answer = stack.sign_in_answer(ADMIN, ADMIN_PASSWORD)
        renewed = anon.post(f"{API}/auth/refresh", json={"refresh_token": answer["refresh_token"]})
        assert renewed.status_code == 200, renewed.text


class Follower:
    """A client following a run's SSE stream in a thread (a live client while the run trains),
    until it is closed: a stopped run's stream stays open, as the run may be resumed."""

    def __init__(self, stack: Stack, run_id: str) -> None:
        self.api = stack.sync_client(timeout=httpx.Timeout(15, read=120))
        self.url = f"{API}/training/runs/{run_id}/stream"
        self.events: list[str] = []
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True, name=f"sse-{run_id}")
        self.thread.start()

    def _follow(self) -> None:
        try:
            with self.api.stream("GET", self.url) as resp:
                for line in resp.iter_lines():
                    if line.startswith("event:"):
                        self.events.append(line.removeprefix("event:").strip())
        except httpx.HTTPError:
            if not self.closing.is_set():
                raise

    def close(self) -> None:
        self.closing.set()
        self.api.close()
        self.thread.join(timeout=15)


def _job(stack: Stack, kind: str, body: dict[str, str]) -> None:
    with client(stack) as api:
        resp = api.post(f"{API}/{kind}/run", json=body)
        assert resp.status_code == 202, resp.text
        path = f"{API}/{kind}/{resp.json()['data']['id']}"
        done = wait(
            lambda: (d := api.get(path).json()["data"])["status"] in ("completed", "failed") and d
        )
    assert done["status"] == "completed", done


def _until(prom: Prometheus, conditions: tuple[str, ...], timeout: float) -> list[str]:
    """Waits until Prometheus has seen what ``conditions`` ask; returns those it never did."""
    deadline = time.monotonic() + timeout
    while (pending := prom.holds(*conditions)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return pending


def scraped_names(urls: dict[str, str]) -> set[str]:
    """The names of every sample the services' ``/metrics`` serve now."""
    names: set[str] = set()
    for url in urls.values():
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
            names.update(sample.name for sample in family.samples)
    return names


def gpu_metrics(exposed: set[str]) -> tuple[set[str], str]:
    """The GPU metrics exempt from the checks, and why: all of them when no service sees a GPU
    (the GPU collector then yields nothing, on purpose), else none."""
    if any(name.startswith("studio_gpu_") for name in exposed):
        return set(), ""
    used = set().union(*(t.metrics() for t in targets()))
    return {m for m in used if m.startswith("studio_gpu_")}, "no service sees a GPU here"


def test_every_panel_query_returns_data(prometheus: Prometheus, workload: Workload) -> None:
    exempt_metrics, why = gpu_metrics(workload.exposed)
    exempt = {t.panel for t in targets() if t.metrics() and t.metrics() <= exempt_metrics}
    if exempt:
        print(f"exempt panels ({why}): {sorted(exempt)}")
        warnings.warn(f"GPU panels exempt, {why}: {sorted(exempt)}", stacklevel=1)
    checked = [t for t in targets() if t.panel not in exempt]
    assert len(checked) >= 40, "the dashboard lost its panels"

    def silent() -> list[Target]:
        return [t for t in checked if not prometheus.answers(t, workload)]

    # A rate needs a second scrape after the last event: look again for a few seconds.
    deadline = time.monotonic() + 15
    while (empty := silent()) and time.monotonic() < deadline:
        time.sleep(1)
        workload.end = time.time()
    assert not empty, "panels without data:\n" + "\n".join(f"{t.panel}: {t.expr}" for t in empty)


def test_every_metric_in_the_dashboard_is_exposed(workload: Workload) -> None:
    used = set().union(*(t.metrics() for t in targets())) - SYNTHETIC
    exempt, _ = gpu_metrics(workload.exposed)
    missing = used - workload.exposed - exempt
    assert not missing, f"in the dashboard but in no /metrics: {sorted(missing)}"


def test_the_variables_queries_answer(prometheus: Prometheus, workload: Workload) -> None:
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        assert prometheus.query(f"group by ({match[2]}) ({match[1]})"), variable["name"]
