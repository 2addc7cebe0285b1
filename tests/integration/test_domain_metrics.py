"""The domain metrics as Prometheus scrapes them from a running studio: the datasets service's
imports, the trainer's runs, queue, lease, epochs and evaluations, the exporter's exports and
parity checks; and a run's own series present while it runs and gone once it has ended.

Each service's ``/metrics`` URL is the one its health answer (``Pong``) gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import Stack
from tests.training_helpers import API, client, learnable_split, submit, wait, wait_status

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets", "trainer", "exporter")
#: Counts metrics of the services' processes from zero: a studio of its own, not the shared one.
STACK_SHARED = False
PER_CLASS = 16
ENDS = ("completed", "failed")


class Scrape:
    """One scrape of a service's ``/metrics``: its samples, by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of ``name``'s samples that carry ``labels``; None when there is none."""
        found = [v for n, lb, v in self.samples if n == name and labels.items() <= lb.items()]
        return sum(found) if found else None

    def of_run(self, run_id: str) -> list[str]:
        """The series labelled with ``run_id``."""
        return [f"{n}{lb}" for n, lb, _ in self.samples if lb.get("run") == run_id]


@pytest.fixture(scope="module")
def urls(stack: Stack) -> dict[str, str]:
    with client(stack) as api:
        services = api.get("/health").json()["data"]["services"]
    return {name: services[name]["metrics_url"] for name in ("datasets", "trainer", "exporter")}


def scrape(url: str) -> Scrape:
    return Scrape(httpx.get(url, timeout=10).text)


def until(url: str, condition: Callable[[Scrape], Any], timeout: float = 60) -> Scrape:
    """The first scrape of ``url`` that meets ``condition`` (polled, with a deadline)."""

    def met() -> Scrape | None:
        s = scrape(url)
        return s if condition(s) else None

    found: Scrape = wait(met, timeout, every=0.2)
    return found


@pytest.fixture(scope="module")
def split(stack: Stack) -> tuple[str, str]:
    return learnable_split(stack, per_class=PER_CLASS, test=0.25)


def test_labelled_counters_exist_at_zero_before_anything_happened(urls: dict[str, str]):
    exporter, trainer, datasets = (scrape(urls[n]) for n in ("exporter", "trainer", "datasets"))
    assert exporter.value("studio_exports_total", format="torchscript", outcome="failed") == 0
    assert exporter.value("studio_export_parity_total", format="onnx", outcome="failed") == 0
    assert trainer.value("studio_runs_total", outcome="stopped") is not None
    assert trainer.value("studio_evaluations_total", outcome="failed") is not None
    assert datasets.value("studio_imports_total", outcome="cancelled") is not None


def test_an_import_is_counted_file_by_file_and_by_its_outcome(
    urls: dict[str, str], split: tuple[str, str]
):
    s = until(urls["datasets"], lambda s: s.value("studio_imports_total", outcome="committed"))
    assert s.value("studio_import_files_total", outcome="imported") == 2 * PER_CLASS
    assert s.value("studio_import_files_total", outcome="failed") == 0
    assert (s.value("studio_import_bytes_total") or 0) > 0
    assert s.value("studio_import_seconds_count") == 1
    assert s.value("studio_imports_running") == 0


def test_a_runs_series_live_while_it_runs_and_go_when_it_ends(
    stack: Stack, urls: dict[str, str], split: tuple[str, str]
):
    trainer = urls["trainer"]
    # given a long run training, with an epoch done
    long = submit(stack, *split, hyperparameters={"epochs": 500}).json()["data"]["id"]
    s = until(trainer, lambda s: s.value("studio_training_loss", run=long, split="val"))
    assert s.value("studio_training_accuracy", run=long, split="val") is not None
    assert (s.value("studio_training_images_per_second", run=long) or 0) > 0
    assert s.value("studio_runs_running") == 1
    assert s.value("studio_lease_held", holder="test") == 1
    # and a second run waiting behind it, which the trainer sees in its queue
    short = submit(stack, *split, hyperparameters={"epochs": 2}).json()["data"]["id"]
    until(trainer, lambda s: s.value("studio_queue_depth") == 1)
    # when the long run is stopped and the short one then trains to its end
    with client(stack) as api:
        assert api.post(f"{API}/training/runs/{long}/stop").status_code == 202
    wait_status(stack, long, "stopped", timeout=60)
    wait_status(stack, short, "completed", timeout=60)
    # then neither run has a series left, no lease is held, and both ends are counted
    s = until(trainer, lambda s: s.value("studio_lease_held") is None)
    assert s.of_run(long) == [] and s.of_run(short) == []
    assert s.value("studio_runs_running") == 0
    assert s.value("studio_queue_depth") == 0
    assert s.value("studio_runs_total", outcome="stopped") == 1
    assert s.value("studio_runs_total", outcome="completed") == 1
    assert (s.value("studio_training_epochs_total") or 0) >= 3
    assert (s.value("studio_training_epoch_seconds_count") or 0) >= 3
    assert s.value("studio_device_wait_seconds_count") == 2
    _evaluate_and_export(stack, urls, short)


def _evaluate_and_export(stack: Stack, urls: dict[str, str], run_id: str) -> None:
    """An evaluation and an ONNX export of the completed run, then their metrics."""
    with client(stack) as api:
        evaluation = api.post(f"{API}/evaluation/run", json={"run_id": run_id})
        assert evaluation.status_code == 202, evaluation.text
        body = {"run_id": run_id, "format": "onnx"}
        export = api.post(f"{API}/export/run", json=body)
        assert export.status_code == 202, export.text
        for path in (
            f"{API}/evaluation/{evaluation.json()['data']['id']}",
            f"{API}/export/{export.json()['data']['id']}",
        ):
            done = wait(lambda p=path: (d := api.get(p).json()["data"])["status"] in ENDS and d)
            assert done["status"] == "completed", done
    s = until(urls["trainer"], lambda s: s.value("studio_evaluations_total", outcome="completed"))
    assert s.value("studio_evaluation_seconds_count") == 1
    s = until(
        urls["exporter"],
        lambda s: s.value("studio_exports_total", format="onnx", outcome="completed"),
    )
    assert s.value("studio_export_parity_total", format="onnx", outcome="passed") == 1
    assert s.value("studio_export_seconds_count", format="onnx") == 1
