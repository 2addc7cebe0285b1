"""Contracts: the msgspec Structs and subject names that services exchange.

A leaf package: it imports msgspec and the standard library only, never ``services``.
Schema rules (STYLE.md): explicit versioned tags, new fields go last with a default, a breaking
change is a new ``.vN`` type. ``contracts/schemas/`` holds the committed JSON Schema snapshot.
"""

from contracts import common, datasets, experiments, exports, identity, projects, training
from contracts.envelope import Message, new_id

#: Every contract type, for the schema snapshot and the contract tests.
ALL: tuple[type[Message], ...] = (
    *common.ALL,
    *identity.ALL,
    *projects.ALL,
    *datasets.ALL,
    *training.ALL,
    *exports.ALL,
)

__all__ = [
    "ALL",
    "Message",
    "common",
    "datasets",
    "experiments",
    "exports",
    "identity",
    "new_id",
    "projects",
    "training",
]
