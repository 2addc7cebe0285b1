"""The evaluation page's fragments for a detector's evaluation, drawn from the metrics the
trainer gives one (``evaluate_detection``): the mAP table, per-class AP and recall, and the
worst images with their boxes drawn over their thumbnails; a classifier's page is unchanged."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.gateway.pages.templating import ENV

RESULT = "fragments/evaluation/result.html"
LIST = "fragments/evaluation/list.html"
EID, RUN, PID = "e" * 32, "r" * 32, "p" * 32


def metrics(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task": "detection",
        "map": 0.4123,
        "map50": 0.75,
        "map75": 0.5,
        "map_small": None,
        "map_medium": 0.25,
        "map_large": 0.5,
        "per_class": [
            {"label": "disc & co", "ap": 0.5, "ap50": 0.9, "recall": 0.8, "truths": 5},
            {"label": "square", "ap": None, "ap50": None, "recall": None, "truths": 0},
        ],
        "images": 4,
        "boxes": 5,
        "score_threshold": 0.5,
        "iou_threshold": 0.5,
        "worst": [
            {
                "image_id": "i1",
                "misses": 1,
                "false_positives": 1,
                "truths": [
                    {"label": "disc & co", "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4, "missed": True}
                ],
                "predictions": [
                    {
                        "label": "square",
                        "x": 0.5,
                        "y": 0.5,
                        "w": 0.25,
                        "h": 0.125,
                        "score": 0.87,
                        "false_positive": True,
                    }
                ],
            },
            {
                "image_id": "i2",
                "misses": 0,
                "false_positives": 1,
                "truths": [],
                "predictions": [
                    {
                        "label": "disc & co",
                        "x": 0.0,
                        "y": 0.0,
                        "w": 1.0,
                        "h": 1.0,
                        "score": 0.6,
                        "false_positive": True,
                    }
                ],
            },
        ],
        "checkpoint_epoch": 2,
        "classes": ["disc & co", "square"],
        "predictions": [],
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
        "images": 4,
        "metrics": metrics(),
        "error": None,
        "started_at": "2026-12-01T10:00:00Z",
        "finished_at": "2026-12-01T10:00:09Z",
    }
    return data | changes


def draw(template: str, data: Any, **query: str) -> str:
    request = SimpleNamespace(query_params=query)
    return ENV.get_template(template).render(data=data, request=request, user=None, path="/")


def row(html: str, marker: str) -> str:
    return html.split(marker, 1)[1].split("</tr>", 1)[0]


def test_the_coco_table_and_per_class_ap_replace_the_classifiers_tables() -> None:
    html = draw(RESULT, evaluation(), project_id=PID)

    assert "41.2 %" in row(html, 'data-metric="map"')
    assert "75.0 %" in row(html, 'data-metric="map50"')
    assert "—" in row(html, 'data-metric="map_small"')  # no small object in the images
    assert "25.0 %" in row(html, 'data-metric="map_medium"')
    disc = row(html, 'data-label="disc &amp; co"')
    assert [
        cell.split(">", 1)[1].split("<", 1)[0] for cell in disc.split('<td class="num"')[1:]
    ] == ["50.0 %", "90.0 %", "80.0 %", "5"]
    assert row(html, 'data-label="square"').count("—") == 3  # a class with no true box
    assert "eval-confusion" not in html and "eval-reliability" not in html
    assert "<script" not in html and "style=" not in html


def test_the_worst_images_draw_their_boxes_over_the_thumbnails_most_errors_first() -> None:
    html = draw(RESULT, evaluation(), project_id=PID)

    assert html.index('data-image-id="i1"') < html.index('data-image-id="i2"')
    first = html.split('data-image-id="i1"', 1)[1].split("</figure>", 1)[0]
    assert f'src="/api/v1/datasets/{PID}/thumbnail/i1"' in first
    assert f'href="/api/v1/datasets/{PID}/image/i1"' in first
    assert 'class="det-truth det-missed" x="10.00" y="20.00" width="30.00" height="40.00"' in first
    assert 'class="det-pred det-fp" x="50.00" y="50.00" width="25.00" height="12.50"' in first
    assert "<title>predicted square at 87.0 %, false positive</title>" in first
    assert "<title>true disc &amp; co, missed</title>" in first
    assert "missed: disc &amp; co" in first and "false: square 87 %" in first


def test_a_forged_project_id_draws_no_link_and_a_clean_detector_says_so() -> None:
    forged = draw(RESULT, evaluation(), project_id="../../logout")
    assert "logout" not in forged and "/thumbnail/" not in forged
    assert 'data-image-id="i1"' in forged  # the counts still show

    clean = draw(RESULT, evaluation(metrics=metrics(worst=[])), project_id=PID)
    assert 'id="eval-no-errors"' in clean and "det-worst" not in clean


def test_the_list_shows_a_detectors_map_and_a_classifier_keeps_its_page() -> None:
    listed = draw(LIST, {"items": [evaluation()]}, run_id=RUN, project_id=PID)
    assert "41.2 %" in listed

    classifier = {"images": 2, "accuracy": 0.5, "per_class": [], "ece": 0.1}
    html = draw(RESULT, evaluation(metrics=classifier), project_id=PID)
    assert 'id="eval-metrics"' in html and "eval-det-metrics" not in html
