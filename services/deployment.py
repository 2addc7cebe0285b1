"""What this deployment runs: the services ``studio up`` starts and the gateway reports on.

The kernel knows no service by name; this module, beside the composition roots
(``services.supervisor``, ``services.cli``), is where the names live. ``STUDIO_SERVICES`` still
overrides them (a test stack runs only the services it needs). Imports ``services.kernel`` only.
"""

from __future__ import annotations

from services.kernel.settings import Settings

#: Every service of the studio (the gateway aside), in the order they start.
SERVICES = ("identity", "projects", "datasets", "trainer", "exporter")


def settings() -> Settings:
    """The environment's settings, this deployment's services unless ``STUDIO_SERVICES`` says."""
    return Settings.from_env(default_services=SERVICES)
