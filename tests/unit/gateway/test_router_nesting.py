"""Every signed-in router is included by the app itself, never inside another router.

FastAPI 0.165 matches a router included in another under the inner router's own paths, so a
route of ``api.imports`` included by ``api.datasets`` was "/import/local" to the app-wide
dependencies: the per-user import quota (``limits.QUOTAS``, keyed by "/datasets/import/local")
never applied. Imports: the gateway's app module and FastAPI's routing.
"""

from __future__ import annotations

from fastapi.routing import APIRoute

from services.gateway import limits
from services.gateway.app import SIGNED_IN_ROUTERS


def test_no_signed_in_router_holds_another() -> None:
    nested = [
        f"{router.prefix or '/'}: {type(route).__name__}"
        for router in SIGNED_IN_ROUTERS
        for route in router.routes
        if not isinstance(route, APIRoute)
    ]
    assert nested == []


def test_every_quota_names_a_route_as_the_app_sees_it() -> None:
    paths = {
        (method, route.path)
        for router in SIGNED_IN_ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert set(limits.QUOTAS) <= paths, set(limits.QUOTAS) - paths
