"""The evaluation and split pages' fragments drawn from answers a quick e2e stack does not give
(labels that need escaping, a failed or running evaluation, one made before calibration bins
existed, a forged project id), without a browser or a stack."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.gateway.pages.templating import ENV

RESULT = "fragments/evaluation/result.html"
LIST = "fragments/evaluation/list.html"
CELL = "fragments/evaluation/cell.html"
SPLIT = "fragments/split/detail.html"
EID, RUN, PID = "e" * 32, "r" * 32, "p" * 32
LABELS = ["cat & dog", "bird"]


def metrics(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "images": 10,
        "accuracy": 0.7,
        "top5_accuracy": None,
        "per_class": [
            {"label": "cat & dog", "precision": 0.8, "recall": 0.6, "f1": 0.686, "support": 5},
            {"label": "bird", "precision": 0.6, "recall": 0.8, "f1": 0.686, "support": 5},
        ],
        "macro": {"precision": 0.7, "recall": 0.7, "f1": 0.686},
        "weighted": {"precision": 0.7, "recall": 0.7, "f1": 0.686},
        "confusion_matrix": {"labels": LABELS, "matrix": [[3, 2], [1, 4]]},
        "ece": 0.12345,
        "misclassified": [
            {"image_id": "i1", "true": "cat & dog", "predicted": "bird", "confidence": 0.9},
            {"image_id": "i2", "true": "bird", "predicted": "cat & dog", "confidence": 0.6},
        ],
        "checkpoint_epoch": 2,
        "calibration": [
            {"lower": 0.5, "upper": 0.75, "count": 4, "accuracy": 0.5, "confidence": 0.6},
            {"lower": 0.75, "upper": 1.0, "count": 6, "accuracy": 0.83, "confidence": 0.9},
        ],
    }
    return data | changes


def evaluation(**changes: Any) -> dict[str, Any]:
    data = {
        "id": EID,
        "run_id": RUN,
        "status": "completed",
        "checkpoint": "best",
        "checkpoint_epoch": 2,
        "subset": "test",
        "images": 10,
        "metrics": metrics(),
        "error": None,
        "started_at": "2026-11-30T22:00:00Z",
        "finished_at": "2026-11-30T22:00:09Z",
    }
    return data | changes


def draw(template: str, data: Any, **query: str) -> str:
    request = SimpleNamespace(query_params=query)
    return ENV.get_template(template).render(data=data, request=request, user=None, path="/")


def test_every_confusion_cell_is_a_heat_button_naming_its_classes_and_count():
    html = draw(RESULT, evaluation(), project_id=PID)
    assert 'aria-label="true cat &amp; dog predicted bird: 2 images"' in html
    assert 'aria-label="true bird predicted bird: 4 images"' in html
    # The label is escaped in the page and encoded in the cell's query.
    assert f"/api/v1/evaluation/{EID}/cell?true=cat%20%26%20dog&predicted=bird&" in html
    assert 'class="heat-10 cell"' in html and 'class="heat-3 cell"' in html
    assert "<script" not in html and "style=" not in html


def test_the_metrics_show_what_the_api_gives_and_the_mistakes_link_the_projects_thumbnails():
    html = draw(RESULT, evaluation(), project_id=PID)
    assert 'data-metric="top5_accuracy"' not in html  # fewer than five classes
    assert 'data-metric="checkpoint_epoch"' in html  # a figure the page has no name for
    assert "70.0 %" in html and "0.1235" in html
    assert f'src="/api/v1/datasets/{PID}/thumbnail/i1"' in html
    assert html.index('data-image-id="i1"') < html.index('data-image-id="i2"')
    assert 'id="eval-reliability"' in html and "0.75\u20131" in html


def test_a_forged_project_id_never_reaches_a_link():
    html = draw(RESULT, evaluation(), project_id="../../logout")
    assert "logout" not in html and "/thumbnail/" not in html


def test_an_evaluation_made_before_calibration_bins_says_so_instead_of_a_diagram():
    old = metrics()
    del old["calibration"]
    html = draw(RESULT, evaluation(metrics=old), project_id=PID)
    assert 'id="eval-no-bins"' in html and "eval-reliability" not in html


def test_a_failed_or_running_evaluation_says_so_and_shows_no_tables():
    error = {"code": "CHECKPOINT_MISSING", "message": "the checkpoint is gone"}
    failed = draw(RESULT, evaluation(status="failed", metrics=None, error=error))
    assert "The evaluation failed: the checkpoint is gone" in failed
    assert "CHECKPOINT_MISSING" in failed and "eval-confusion" not in failed
    running = draw(RESULT, evaluation(status="running", metrics=None))
    assert "<progress" in running and 'data-status="running"' in running


def test_the_list_opens_each_evaluation_and_an_empty_cell_says_it_is_empty():
    listed = draw(LIST, {"items": [evaluation()]}, run_id=RUN, project_id=PID)
    assert f'hx-get="/api/v1/evaluation/{EID}?project_id={PID}"' in listed
    assert "No evaluation" in draw(LIST, {"items": []}, run_id=RUN)
    empty = draw(CELL, {"true": "bird", "predicted": "cat & dog", "items": []})
    assert "true bird predicted cat &amp; dog: 0 images" in empty and "<img" not in empty


def test_the_split_table_counts_every_class_of_any_subset_with_zeros_filled():
    split = {
        "id": "s" * 32,
        "name": "s1",
        "strategy": "random",
        "seed": 1,
        "ratios": {"train": 0.8, "val": 0.2, "test": 0.0},
        "images": 5,
        "groups": 5,
        "totals": {"train": 4, "val": 1, "test": 0},
        "counts": {"train": {"a": 4}, "val": {"b": 1}, "test": {}},
        "created_at": "2026-11-30T22:00:00Z",
        "deviations": [],
    }
    html = draw(SPLIT, split)
    row_a = html.split('data-label="a"')[1].split("</tr>")[0]
    row_b = html.split('data-label="b"')[1].split("</tr>")[0]
    assert [c.split(">")[1].split("<")[0] for c in row_a.split("data-subset=")[1:]] == [
        "4",
        "0",
        "0",
    ]
    assert [c.split(">")[1].split("<")[0] for c in row_b.split("data-subset=")[1:]] == [
        "0",
        "1",
        "0",
    ]
