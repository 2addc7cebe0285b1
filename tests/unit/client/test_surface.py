"""``StudioClient`` and ``AsyncStudioClient`` have one surface: the same resources, each with
the same methods taking the same parameters (names, kinds and defaults)."""

from __future__ import annotations

import inspect

import httpx

from studio_client import AsyncStudioClient, StudioClient

RESOURCES = (
    "auth",
    "projects",
    "datasets",
    "imports",
    "splits",
    "runs",
    "evaluations",
    "exports",
    "tasks",
)


def public_methods(resource: object) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(getattr(resource, name))
        for name in dir(resource)
        if not name.startswith("_") and callable(getattr(resource, name))
    }


def shape(signature: inspect.Signature) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_the_blocking_and_the_async_client_offer_the_same_calls():
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    with StudioClient("http://s", transport=transport) as blocking:
        aio = AsyncStudioClient("http://s", transport=transport)
        for name in RESOURCES:
            sync_methods = public_methods(getattr(blocking, name))
            async_methods = public_methods(getattr(aio, name))
            assert sorted(sync_methods) == sorted(async_methods), name
            for method, signature in async_methods.items():
                assert shape(sync_methods[method]) == shape(signature), f"{name}.{method}"


def test_the_plans_calls_are_there():
    wanted = {
        "auth": {"login"},
        "projects": {"list", "get", "create", "archive"},
        "datasets": {"list", "get", "images"},
        "imports": {"local", "upload", "get", "cancel", "follow"},
        "splits": {"create", "get", "list"},
        "runs": {"create", "get", "list", "stop", "resume", "follow"},
        "evaluations": {"create", "get"},
        "exports": {"create", "get", "download", "predict"},
        "tasks": {"list", "get", "wait"},
    }
    aio = AsyncStudioClient("http://s")
    for name, calls in wanted.items():
        assert calls <= set(public_methods(getattr(aio, name))), name
