"""The fault suite prints its figures (``tests/reliability/figures.py``) after the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import figures

FIGURES_JSON = Path(__file__).with_name("figures.json")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = figures.table()
    if not lines:
        return
    terminalreporter.section("reliability figures")
    for line in lines:
        terminalreporter.write_line(line)
    figures.write(FIGURES_JSON)
