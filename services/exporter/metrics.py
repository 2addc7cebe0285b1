"""The exporter's Prometheus metrics: exports by format, their time, their parity checks.

Every labelled counter exists at 0 from the start, for each format and outcome. Imports
``prometheus_client`` and ``contracts`` only.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from contracts.exports import FORMATS

EXPORT_OUTCOMES = ("completed", "failed")
PARITY_OUTCOMES = ("passed", "failed")

EXPORT_SECONDS = Histogram(
    "studio_export_seconds",
    "Time of one export, checkpoint fetched to files kept (any outcome).",
    ["format"],
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
PARITY = Counter(
    "studio_export_parity_total",
    "Parity checks of exported models against their checkpoint, by outcome.",
    ["format", "outcome"],
)
EXPORTS = Counter("studio_exports_total", "Exports ended, by outcome.", ["format", "outcome"])

for _format in FORMATS:
    EXPORT_SECONDS.labels(_format)
    for _outcome in PARITY_OUTCOMES:
        PARITY.labels(_format, _outcome)
    for _outcome in EXPORT_OUTCOMES:
        EXPORTS.labels(_format, _outcome)


def parity_checked(format: str, passed: bool) -> None:
    PARITY.labels(format, "passed" if passed else "failed").inc()


def export_ended(format: str, completed: bool, seconds: float) -> None:
    """An export of ``format`` this instance ran ended after ``seconds``."""
    EXPORTS.labels(format, "completed" if completed else "failed").inc()
    EXPORT_SECONDS.labels(format).observe(max(seconds, 0.0))
