"""The system page's fragment drawn from answers the e2e machines cannot give (a GPU, a run
training and one waiting, a service down), without a browser or a stack."""

from __future__ import annotations

from typing import Any

from services.gateway.pages.templating import ENV

FIGURES = "fragments/system/figures.html"


def answer(**changes: Any) -> dict[str, Any]:
    """What GET /api/system answers, with ``changes``."""
    data: dict[str, Any] = {
        "nats": {"ok": True, "server": "127.0.0.1:4222"},
        "services": {
            "gateway": {"ok": True, "instance": "laptop"},
            "trainer": {"ok": True, "instance": "laptop", "metrics_url": None},
        },
        "read_model": {"TRAINING": {"position": 7, "lag": 0, "ok": True, "error": None}},
        "gpus": [],
        "gpus_reason": "NVML is not available: NVML Shared Library Not Found",
        "leases": [],
        "queue": {"running": [], "queued": []},
        "runs": {},
        "workspace": {"path": "/ws", "total": 100 * 2**30, "used": 25 * 2**30, "free": 75 * 2**30},
    }
    return data | changes


def draw(data: dict[str, Any]) -> str:
    return ENV.get_template(FIGURES).render(data=data, request=None, user=None, path="/system")


H200 = {
    "index": 0,
    "name": "NVIDIA H200",
    "utilization_percent": 87.0,
    "memory_used_bytes": 40 * 2**30,
    "memory_total_bytes": 140 * 2**30,
    "temperature_c": 61.0,
    "power_w": 412.3,
    "error": None,
}


def test_a_gpu_shows_its_name_and_figures_and_not_cpu_only():
    unread = {k: None for k in H200} | {"index": 1, "error": "GPU is lost"}
    html = draw(answer(gpus=[H200, unread], gpus_reason=None))
    assert "NVIDIA H200" in html and "CPU only" not in html
    for figure in ("87 %", "40.0 GiB of 140.0 GiB", "61 °C", "412.3 W", "w-30"):
        assert figure in html, figure
    assert "This device cannot be read: GPU is lost" in html


def test_without_a_gpu_it_says_cpu_only_and_why():
    html = draw(answer())
    assert "CPU only" in html and "NVML Shared Library Not Found" in html
    assert "75.0 GiB free" in html and "w-25" in html


def test_the_queue_shows_ones_own_runs_and_only_the_place_of_others():
    running = {
        "id": "run1",
        "project_id": "p1",
        "status": "running",
        "epochs": 10,
        "epochs_done": 3,
        "visible": True,
    }
    hidden = {"id": None, "status": "queued", "visible": False, "position": 1}
    mine = running | {"id": "run2", "status": "queued", "epochs_done": 0, "position": 2}
    lease = {
        "key": "gpu-0",
        "holder": "trainer@box",
        "run_id": "run1",
        "since_at": "2026-11-30T22:00:00+00:00",
    }
    html = draw(answer(queue={"running": [running], "queued": [hidden, mine]}, leases=[lease]))
    assert 'href="/projects/p1/training"' in html and "3 / 10" in html
    assert "another project\N{RIGHT SINGLE QUOTATION MARK}s run" in html and "run2" in html
    assert "trainer@box" in html and "2026-11-30 22:00 UTC" in html


def test_a_service_down_is_named_at_the_top_and_in_its_row():
    down = {"ok": False, "error": "no answer within 2s"}
    services = answer()["services"] | {"trainer": down}
    stuck = {"TRAINING": {"position": 7, "lag": 3, "ok": False, "error": "projector failed"}}
    html = draw(answer(services=services, read_model=stuck))
    assert "Not everything is running: trainer, the read model of TRAINING." in html
    assert "no answer within 2s" in html and "projector failed" in html
