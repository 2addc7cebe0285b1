"""The rule of ``services.gateway.readmodels``: routes and streams read through its queries and
build no SQL. Read from the source with ``ast`` (nothing is imported or run): outside the read
models, the gateway may import a session's type from sqlmodel, and nothing else of sqlmodel or
sqlalchemy but the engine's type, nor call a session's ``exec``/``execute``/``get``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GATEWAY = ROOT / "services" / "gateway"
#: What a module outside the read models may import of the SQL libraries: types to annotate.
TYPES = {
    "sqlmodel.ext.asyncio.session": {"AsyncSession"},
    "sqlalchemy.ext.asyncio": {"AsyncEngine"},
}
SESSION_CALLS = {"exec", "execute", "get", "refresh", "scalar", "scalars"}


def sql_in(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                a.name for a in node.names if a.name.split(".")[0] in ("sqlmodel", "sqlalchemy")
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            "sqlmodel",
            "sqlalchemy",
        ):
            allowed = TYPES.get(node.module or "", set())
            found += [f"{node.module}.{a.name}" for a in node.names if a.name not in allowed]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "db"
            and node.func.attr in SESSION_CALLS
        ):
            found.append(f"db.{node.func.attr}(...) at line {node.lineno}")
    return found


def test_no_route_or_stream_builds_sql():
    outside = [p for p in GATEWAY.rglob("*.py") if "readmodels" not in p.parts]
    assert outside, "no gateway module found"
    broken = {
        str(p.relative_to(ROOT)): found
        for p in outside
        if (found := sql_in(p.read_text(encoding="utf-8")))
    }
    assert not broken, broken


def test_the_check_sees_a_query_built_in_a_route():
    route = "from sqlmodel import select\nasync def r(db):\n    return await db.exec(select(1))\n"
    assert sql_in(route) == ["sqlmodel.select", "db.exec(...) at line 3"]
