"""The dataset page's import fragments drawn from answers a quick e2e stack rarely gives (an
import still validating, one that failed after it was accepted, a cancelled one, a report too
long to show whole, file names that need escaping), without a browser or a stack."""

from __future__ import annotations

from typing import Any

from services.gateway.pages import dataset
from services.gateway.pages.templating import ENV

JOB = "fragments/dataset/import_job.html"
LIST = "fragments/dataset/import_list.html"
ID = "i" * 32


def job(**changes: Any) -> dict[str, Any]:
    """What GET /api/datasets/import/{id} answers for a completed upload, with ``changes``."""
    data: dict[str, Any] = {
        "id": ID,
        "project_id": "p" * 32,
        "state": "completed",
        "source_kind": "upload",
        "source": "cats.zip",
        "format": "auto",
        "files": 4,
        "classes": ["cat", "dog"],
        "report": {
            "format": "folder",
            "files": 6,
            "imported": 3,
            "duplicates": [
                {"file": "dog/d.png", "label": "dog", "image_id": "x" * 64, "kept_label": "cat"}
            ],
            "corrupt": [{"file": "cat/bad.png", "reason": "not a readable image"}],
            "skipped": [{"file": "notes.txt", "reason": "unsupported file type .txt"}],
            "label_problems": [],
            "seconds": 0.42,
        },
        "error": None,
        "started_at": "2026-11-30T22:00:00Z",
        "finished_at": "2026-11-30T22:00:01Z",
        "progress": None,
    }
    return data | changes


def draw(template: str, **values: Any) -> str:
    return ENV.get_template(template).render(request=None, user=None, path="/", **values)


def test_the_fragments_are_registered_for_the_routes_that_answer_an_import():
    assert set(dataset.FRAGMENTS) == {
        ("GET", "/api/datasets/import/{import_id}"),
        ("POST", "/api/datasets/import/local"),
        ("POST", "/api/datasets/import/{import_id}/cancel"),
    }


def test_a_completed_import_shows_its_figures_and_names_each_file_not_imported():
    html = draw(JOB, data=job())
    assert 'data-done="true"' in html and 'data-state="completed"' in html
    for key, value in (("files", 6), ("imported", 3), ("duplicates", 1), ("corrupt", 1)):
        assert f'data-figure="{key}">{value}<' in html
    assert 'data-figure="label_problems">0<' in html
    for name in ("dog/d.png", "cat/bad.png", "notes.txt", "unsupported file type .txt"):
        assert name in html
    assert "other label" in html  # the copy's label differs from the kept image's
    assert 'data-problems="label_problems"' not in html  # no empty table
    assert "Cancel import" not in html


def test_a_running_import_shows_its_progress_and_a_cancel_button():
    progress = {"phase": "decoding", "done": 5, "total": 40, "rate": 12.5, "eta_s": 2.8}
    html = draw(JOB, data=job(state="importing", report=None, progress=progress))
    assert 'data-done="false"' in html
    assert '<progress id="import-bar" max="40" value="5">' in html
    assert "5 / 40 files" in html
    assert f'data-cancel-import="{ID}"' in html


def test_an_import_not_yet_validated_has_an_indeterminate_bar():
    html = draw(JOB, data=job(state="running", files=None, report=None))
    assert '<progress id="import-bar" max="1">' in html  # no value: indeterminate
    assert "0 / ? files" in html
    assert "starting" in html


def test_a_failed_import_tells_its_reason_and_a_cancelled_one_says_nothing_was_kept():
    error = {"code": "CORRUPT_ARCHIVE", "message": "the archive is damaged", "status": 422}
    failed = draw(JOB, data=job(state="failed", report=None, error=error))
    assert "The import failed:" in failed and "the archive is damaged" in failed
    assert "CORRUPT_ARCHIVE" in failed
    error = {"code": "CANCELLED", "message": "the import was cancelled", "status": 422}
    cancelled = draw(JOB, data=job(state="cancelled", report=None, error=error))
    assert "cancelled: nothing of it was kept" in cancelled


def test_a_long_report_shows_its_first_files_and_how_many_more():
    corrupt = [{"file": f"c/{i}.png", "reason": "truncated"} for i in range(250)]
    report = job()["report"] | {"corrupt": corrupt}
    html = draw(JOB, data=job(report=report))
    assert "c/199.png" in html and "c/200.png" not in html
    assert "and 50 more" in html
    assert 'data-figure="corrupt">250<' in html


def test_file_names_are_text_never_markup():
    skipped = [{"file": "<img src=x onerror=alert(1)>.txt", "reason": "odd"}]
    report = job()["report"] | {"skipped": skipped}
    html = draw(JOB, data=job(source="<b>x</b>.zip", report=report))
    assert "<img src=x" not in html and "<b>x</b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in html


def test_the_list_of_imports_shows_each_state_and_opens_its_panel():
    imports = [
        job(),
        job(id="j" * 32, state="failed", report=None, source_kind="local", source="/data/x"),
    ]
    html = draw(LIST, imports=imports)
    assert html.count("<tr data-import-row=") == 2
    assert f'hx-get="/api/v1/datasets/import/{ID}"' in html
    assert 'data-state="failed"' in html and "server path" in html
    assert "No imports yet" in draw(LIST, imports=[])


def test_running_picks_the_newest_import_still_under_way():
    imports = [job(state="completed"), job(id="j" * 32, state="importing"), job(id="k" * 32)]
    assert dataset.running(imports) == "j" * 32
    assert dataset.running([job()]) == ""


def test_a_bounded_report_shows_the_totals_of_what_it_lists_in_part():
    # given a report that lists its first 1,000 skipped files of 300,000 (``ImportReport``)
    skipped = [
        {"file": f"junk/{i}.txt", "reason": "unsupported file type .txt"} for i in range(1000)
    ]
    report = job()["report"] | {"skipped": skipped, "skipped_total": 300_000}
    html = draw(JOB, data=job(report=report))
    # then its figure counts them all, and its table says how many it does not show
    assert 'data-figure="skipped">300,000<' in html
    assert "junk/199.txt" in html and "junk/200.txt" not in html
    assert "and 299,800 more" in html
