"""The datasets service's Prometheus metrics: imports as they run, file by file.

Files are counted as the import processes them (not once it commits), so a dashboard sees a
large import move; an import's outcome and duration once it has ended. Every labelled counter
exists at 0 from the start, for each of its outcomes. Imports ``prometheus_client`` only.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: What became of one file of an import: read and kept, left out by the manifest (not an
#: image, no label), or unreadable as an image.
FILE_OUTCOMES = ("imported", "skipped", "failed")
#: How an import ended.
IMPORT_OUTCOMES = ("committed", "failed", "cancelled")

IMPORT_FILES = Counter(
    "studio_import_files_total", "Files of imports processed, by outcome.", ["outcome"]
)
IMPORT_BYTES = Counter("studio_import_bytes_total", "Bytes of the image files imported.")
IMPORTS = Counter("studio_imports_total", "Imports ended, by outcome.", ["outcome"])
IMPORT_SECONDS = Histogram(
    "studio_import_seconds",
    "Time from an import's start to its end (any outcome).",
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
IMPORTS_RUNNING = Gauge("studio_imports_running", "Imports this instance runs now.")

for _outcome in FILE_OUTCOMES:
    IMPORT_FILES.labels(_outcome)
for _outcome in IMPORT_OUTCOMES:
    IMPORTS.labels(_outcome)


def import_started() -> None:
    IMPORTS_RUNNING.inc()


def files(outcome: str, count: int = 1, size: int = 0) -> None:
    """``count`` files of an import processed with ``outcome``; ``size`` bytes imported."""
    if count:
        IMPORT_FILES.labels(outcome).inc(count)
    if size:
        IMPORT_BYTES.inc(size)


def import_ended(outcome: str, seconds: float) -> None:
    """An import this instance ran has ended with ``outcome`` after ``seconds``."""
    IMPORTS_RUNNING.dec()
    IMPORTS.labels(outcome).inc()
    IMPORT_SECONDS.observe(max(seconds, 0.0))
