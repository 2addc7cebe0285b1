"""The export page's fragments drawn from answers a quick e2e stack does not give (an export
still running, one whose parity failed, a TorchScript export, an empty list), without a browser
or a stack."""

from __future__ import annotations

from typing import Any

from services.gateway.pages.templating import ENV

DETAIL = "fragments/export/detail.html"
LIST = "fragments/export/list.html"
ID = "e" * 32
RUN = "r" * 32
PARITY = {
    "images": 48,
    "max_abs_diff": 3.1e-7,
    "top1_agreement": 1.0,
    "torch_accuracy": 0.9375,
    "exported_accuracy": 0.9375,
    "passed": True,
}
LATENCY = {"exported_b1": 0.5, "exported_b32": 8.0, "torch_b1": 2.0, "torch_b32": 16.0}


def export(**changes: Any) -> dict[str, Any]:
    """What GET /api/export/{id} answers for a completed ONNX export, with ``changes``."""
    data: dict[str, Any] = {
        "id": ID,
        "run_id": RUN,
        "status": "completed",
        "format": "onnx",
        "checkpoint": "best",
        "checkpoint_epoch": 3,
        "checkpoint_sha256": "c" * 64,
        "file_name": "model.onnx",
        "size": 3 * 2**20,
        "sha256": "a" * 64,
        "parity": PARITY,
        "latency": LATENCY,
        "bundle_size": 4 * 2**20,
        "bundle_sha256": "b" * 64,
        "error": None,
        "started_at": "2026-11-30T22:00:00Z",
        "finished_at": "2026-11-30T22:00:09Z",
    }
    return data | changes


def draw(template: str, data: Any) -> str:
    return ENV.get_template(template).render(data=data, request=None, user=None, path="/")


def test_a_completed_export_shows_its_figures_and_downloads_and_asks_no_more():
    html = draw(DETAIL, export())
    assert 'data-status="completed"' in html and 'data-parity="passed"' in html
    assert "hx-trigger" not in html  # finished: it stops asking for itself
    assert 'id="parity-badge" class="badge ok">passed' in html
    for figure in ("3.10e-07", "100.0 %", "93.8 %", "0.5 ms", "16 ms", "4\u00d7", "0.25 ms"):
        assert figure in html, figure
    assert f'href="/api/v1/export/{ID}/download"' in html and "a" * 64 in html
    assert f'href="/api/v1/export/{ID}/bundle"' in html and "b" * 64 in html
    assert f"sha256sum {RUN}-{ID}.onnx" in html


def test_a_running_export_asks_for_itself_until_it_ends_and_offers_nothing_yet():
    html = draw(DETAIL, export(status="running", parity=None, latency=None, sha256=None))
    assert f'hx-get="/api/v1/export/{ID}" hx-trigger="every 1s" hx-swap="outerHTML"' in html
    assert "<progress" in html
    assert "download" not in html.split("</dl>", 1)[1].lower()


def test_a_failed_export_says_why_with_its_failed_parity():
    failed = PARITY | {"passed": False, "top1_agreement": 0.5, "max_abs_diff": 2.5}
    error = {"code": "PARITY_FAILED", "message": "the exported model disagrees"}
    html = draw(DETAIL, export(status="failed", parity=failed, latency=None, error=error))
    assert "The export failed: the exported model disagrees" in html and "PARITY_FAILED" in html
    assert 'id="parity-badge" class="badge bad">failed' in html and "50.0 %" in html
    assert "hx-trigger" not in html and "/download" not in html


def test_a_torchscript_export_is_named_so():
    html = draw(DETAIL, export(format="torchscript", file_name="model.pt"))
    assert 'data-format="torchscript"' in html
    assert "Download the TorchScript model" in html and f"{RUN}-{ID}.pt" in html


def test_the_list_shows_each_export_and_an_empty_one_says_so():
    running = export(id="f" * 32, status="running", parity=None, sha256=None, size=None)
    html = draw(LIST, {"items": [export(), running]})
    assert f'id="export-row-{ID}"' in html and f'id="export-row-{"f" * 32}"' in html
    assert html.count('hx-target="#export-detail"') == 2
    assert "aaaaaaaaaaaa…" in html
    assert "No exports yet." in draw(LIST, {"items": []})


def test_a_detector_exports_parity_is_told_in_boxes():
    parity = PARITY | {"max_abs_diff": 2e-5, "torch_accuracy": None, "exported_accuracy": None,
                       "min_iou": 0.99987, "detections": 412}  # fmt: skip
    html = draw(DETAIL, export(parity=parity))
    assert 'id="parity-badge" class="badge ok">passed' in html
    assert 'id="parity-detections">412<' in html and 'id="parity-min-iou">0.9999<' in html
    assert "IoU of at least 0.99" in html and "Images whose boxes all match" in html
    assert "logit" not in html and "Accuracy of the trained model" not in html
    assert "Largest logit difference" in draw(DETAIL, export())  # a classifier's is unchanged
