"""Traces: OpenTelemetry spans, and W3C trace context in NATS headers on every hop.

``setup_tracing`` installs the SDK (a ``BatchSpanProcessor`` exporting OTLP over HTTP) only when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set. Otherwise
nothing is installed and ``span`` makes no span at all: it only carries an incoming context on,
so that a caller's ``traceparent`` still reaches the events it causes, at the cost of a header.

Every hop carries ``traceparent``/``tracestate`` (``inject``, ``extract``): commands and their
replies, queries, events (stored in the event's headers), and the HTTP request that started it.

Imports nothing of the studio but the settings' type; the OpenTelemetry SDK only when enabled.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import Token
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from services.kernel.settings import Settings

__all__ = [
    "Context",
    "SpanKind",
    "attached",
    "enabled",
    "extract",
    "inject",
    "link_to",
    "parent",
    "setup_tracing",
    "span",
    "tracer",
]

#: The instrumentation scope of the studio's own spans.
SCOPE = "ai-studio"
TRACEPARENT = "traceparent"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

H = TypeVar("H", bound=MutableMapping[str, str])
_W3C = TraceContextTextMapPropagator()
_tracers: dict[str, Tracer] = {}
_provider_seen: object = None


def setup_tracing(service: str, settings: Settings) -> None:
    """Export this process's spans as ``service`` when an OTLP endpoint is configured; without
    one, install nothing (the OpenTelemetry API stays a no-op). Spans still queued are
    exported at exit (the provider's shutdown runs then)."""
    if enabled() or not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return  # installed already (a second app in one process), or nowhere to export to
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": service,
            "service.namespace": "ai-studio",
            "service.instance.id": settings.instance,
            "service.version": _version(),
        }
    )
    provider = TracerProvider(resource=resource)
    # Endpoint, headers, timeout and batching come from the OTEL_* variables of the SDK.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def _version() -> str:
    try:
        return version("ai-studio")
    except PackageNotFoundError:
        return "unknown"


def enabled() -> bool:
    """Whether spans are recorded: a tracer provider is installed (by ``setup_tracing``, or by
    a test). Read from the API's global: ``trace.get_tracer_provider()`` reads ``os.environ``
    at each call, a microsecond on every hop."""
    return getattr(trace, "_TRACER_PROVIDER", None) is not None


def tracer(name: str = SCOPE) -> Tracer:
    """The tracer of scope ``name``, from the provider installed now (one per scope)."""
    global _provider_seen
    provider = trace.get_tracer_provider()
    if provider is not _provider_seen:
        _tracers.clear()
        _provider_seen = provider
    if name not in _tracers:
        _tracers[name] = provider.get_tracer(name, _version())
    return _tracers[name]


def inject(headers: H, context: Context | None = None) -> H:
    """Write ``context``'s (by default the current one's) ``traceparent`` and ``tracestate``
    into ``headers`` and return them; nothing is written when there is no valid span."""
    _W3C.inject(headers, context=context)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context:
    """The context that ``headers``' ``traceparent``/``tracestate`` name (an empty one when
    they name none)."""
    return _W3C.extract(headers or {}, context=Context())


def parent(headers: Mapping[str, str] | None) -> Context | None:
    """The parent of a span or event with ``headers``: the current span when there is one, else
    the context the headers carry; None means "the current context"."""
    if trace.get_current_span().get_span_context().is_valid:
        return None
    if headers and TRACEPARENT in headers:
        return extract(headers)
    return None


def link_to(headers: Mapping[str, str] | None, **attributes: str) -> list[Link]:
    """A link to the span whose context ``headers`` carry (none when they carry none)."""
    context = trace.get_current_span(extract(headers)).get_span_context()
    return [Link(context, attributes or None)] if context.is_valid else []


@contextmanager
def attached(context: Context | None) -> Iterator[None]:
    """``context`` made current inside the block (None: the current one stays)."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


class _Carry:
    """Tracing off, a span is this: ``context`` (when given) current inside, nothing recorded.
    A class rather than a generator: it is on every hop, and costs a tenth as much."""

    __slots__ = ("context", "token")

    def __init__(self, context: Context | None) -> None:
        self.context = context
        self.token: Token[Context] | None = None

    def __enter__(self) -> Span:
        if self.context is None:
            return INVALID_SPAN
        self.token = otel_context.attach(self.context)
        return trace.get_current_span()

    def __exit__(self, *exc: object) -> None:
        if self.token is not None:
            otel_context.detach(self.token)
            self.token = None


#: The span of every hop with no context to carry while tracing is off (it holds no state).
_NOTHING = _Carry(None)


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
    links: Sequence[Link] = (),
    start_time: int | None = None,
    scope: str = SCOPE,
) -> AbstractContextManager[Span]:
    """A span named ``name``, current inside the block, child of ``context`` (by default the
    current one). An exception leaving the block is recorded on it and marks it failed.

    Tracing off, no span is made: ``context`` (when given) is made current, so that what the
    block sends carries it on, and the span yielded records nothing."""
    if not enabled():
        return _NOTHING if context is None else _Carry(context)
    return tracer(scope).start_as_current_span(
        name, context=context, kind=kind, links=links, start_time=start_time
    )
