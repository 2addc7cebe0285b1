"""Spans recorded in memory for a test, and ways to read them: which span is whose child,
which trace a ``traceparent`` header names."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def record_spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Installs an SDK tracer provider that keeps every ended span, for this test only (the
    OpenTelemetry API lets a process set its provider once: the test restores the unset one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    return exporter


def named(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> ReadableSpan:
    """The one span called ``name``."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s.name for s in spans]}"
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def ids(span: ReadableSpan) -> tuple[int, int]:
    """(trace id, span id) of ``span``."""
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def header_ids(traceparent: str) -> tuple[int, int]:
    """(trace id, span id) that a W3C ``traceparent`` names."""
    _, trace_id, span_id, _ = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)
