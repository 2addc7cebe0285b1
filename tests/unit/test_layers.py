"""The layering rules of DESIGN.md §3, read from the import statements of every module under
``services/`` and ``contracts/`` (parsed with ``ast``, nothing is imported or run):

1. ``contracts/`` is a leaf: it imports nothing from ``services``.
2. The kernel knows no context: no ``contracts.<context>`` (only ``contracts``'s own
   ``Message``/``new_id``, ``contracts.common`` and ``contracts.envelope``), no torch, and no
   other ``services`` package.
3. No context (identity, projects, datasets, trainer, exporter, gateway) imports another; each
   may use ``services.kernel`` and ``services.vision``. ``services.cli`` and
   ``services.supervisor`` are the composition roots and may import anything.
4. Only the trainer and the exporter import ``services.vision``, which imports no other
   ``services`` package.
5. The gateway reaches images and exported files through its ports (``gateway.blobs``: a
   query, the Object Store), never another service's folders: it imports no
   ``services.kernel.blobstore``.

What is still broken today is listed in ``ALLOWED`` with its reason, so a new violation fails
and an entry that is no longer needed fails too: the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTEXTS = frozenset({"identity", "projects", "datasets", "trainer", "exporter", "gateway"})
KERNEL_CONTRACTS = frozenset({"contracts", "contracts.common", "contracts.envelope"})
TORCH = frozenset({"torch", "torchvision"})
VISION_USERS = frozenset({"trainer", "exporter", "vision"})

#: (module path, imported module) -> why it is still there. Remove an entry with its cause.
ALLOWED: dict[tuple[str, str], str] = {}


def _module_of(path: str) -> str:
    """``services/kernel/bus.py`` -> ``services.kernel.bus`` (a package is its ``__init__``)."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    """Whether a dotted name is a module or package of this repository (not a class in one)."""
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported(path: str, source: str) -> Iterator[str]:
    """Every module ``source`` imports, anywhere in it (a local import is a dependency too).

    ``from a import b`` names ``a``, and ``a.b`` as well when ``b`` is a module, so that
    ``from contracts import datasets`` is seen as ``contracts.datasets``.
    """
    package = _module_of(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # a relative import is resolved against the module's package
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            for alias in node.names:
                if _is_module(f"{module}.{alias.name}"):
                    yield f"{module}.{alias.name}"


def broken_rule(path: str, module: str) -> str | None:
    """The rule that importing ``module`` from the file at ``path`` breaks, if any."""
    parts = path.split("/")
    owner = parts[1] if parts[0] == "services" and len(parts) > 2 else None
    top = module.split(".")[0]
    used = module.split(".")[1] if top == "services" and "." in module else None
    if parts[0] == "contracts" and top == "services":
        return "contracts/ imports nothing from services"
    if owner == "kernel":
        if top == "contracts" and module not in KERNEL_CONTRACTS:
            return "the kernel imports no context's contract"
        if top in TORCH:
            return "the kernel imports no torch"
        if used not in (None, "kernel"):
            return "the kernel imports no other services package"
    if used == "vision" and owner not in VISION_USERS:
        return "only the trainer and the exporter import services.vision"
    if owner == "vision" and used not in (None, "vision"):
        return "services.vision imports no other services package"
    if owner in CONTEXTS and used in CONTEXTS and used != owner:
        return "a context imports no other context"
    if owner == "gateway" and module == "services.kernel.blobstore":
        return "the gateway reads no blob folder"
    return None


def violations() -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    files = [*ROOT.glob("services/**/*.py"), *ROOT.glob("contracts/**/*.py")]
    for file in sorted(files):
        path = file.relative_to(ROOT).as_posix()
        for module in imported(path, file.read_text(encoding="utf-8")):
            rule = broken_rule(path, module)
            if rule:
                found[(path, module)] = rule
    return found


def test_no_module_breaks_a_layering_rule_beyond_the_known_ones():
    new = {key: rule for key, rule in violations().items() if key not in ALLOWED}
    assert not new, "\n".join(f"{path} imports {mod}: {rule}" for (path, mod), rule in new.items())


def test_every_allowed_exception_is_still_needed():
    # a fixed violation leaves the list, so the list cannot hide a new one at the same place
    stale = ALLOWED.keys() - violations().keys()
    assert not stale, f"no longer violated, remove from ALLOWED: {sorted(stale)}"


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("contracts/x.py", "from services.kernel import bus", "contracts/ imports nothing"),
        ("services/kernel/x.py", "from contracts import datasets", "no context's contract"),
        ("services/kernel/x.py", "import contracts.training", "no context's contract"),
        ("services/kernel/x.py", "from torch import nn", "imports no torch"),
        ("services/kernel/x.py", "from services.vision import models", "no other services"),
        ("services/trainer/x.py", "from services.datasets import formats", "no other context"),
        ("services/gateway/x.py", "import services.vision.preprocess", "only the trainer"),
        ("services/vision/x.py", "from services.trainer import engine", "no other services"),
        ("services/trainer/a/x.py", "from ...datasets import formats", "no other context"),
        ("services/gateway/api/x.py", "from services.kernel.blobstore import B", "no blob folder"),
    ],
)
def test_each_rule_catches_its_violation(path: str, source: str, rule: str):
    broken = [broken_rule(path, module) for module in imported(path, source)]
    assert any(rule in (found or "") for found in broken), broken


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("services/kernel/x.py", "from contracts import Message, new_id"),
        ("services/kernel/x.py", "from contracts.common import Reply"),
        ("services/trainer/x.py", "from services.vision.models import build_model"),
        ("services/exporter/x.py", "from services.kernel import bus"),
        ("services/cli.py", "from services.trainer import app"),
        ("services/trainer/a/x.py", "from . import y"),
    ],
)
def test_what_the_rules_allow(path: str, source: str):
    assert all(broken_rule(path, module) is None for module in imported(path, source))
