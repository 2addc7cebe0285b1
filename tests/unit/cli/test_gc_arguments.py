"""``studio gc`` (issue 13) refuses a grace that is no number of seconds before it asks the
datasets service anything: below zero, a word, or nan and inf, which would travel as JSON null
and be read as the service's default grace (an hour) — deleting by a grace nobody asked for."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from services import cli_gc


@pytest.mark.parametrize(
    ("grace", "says"),
    [
        ("-1", "-1.0 is not in the range x>=0"),
        ("soon", "'soon' is not a valid float range"),
        ("nan", "nan is not a number of seconds"),
        ("inf", "inf is not a number of seconds"),
    ],
)
def test_a_grace_that_is_no_number_of_seconds_is_a_usage_error_before_any_request(
    grace: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []

    async def request(*args: object) -> None:
        asked.append(args)

    monkeypatch.setattr("services.cli._request", request)
    result = CliRunner().invoke(cli_gc.gc, ["--yes", "--grace", grace])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--grace'" in result.output and says in result.output
    assert asked == []
