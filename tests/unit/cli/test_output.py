"""What the command prints: JSON documents, tables and figures for people, and failures."""

from __future__ import annotations

import io
import json

import click
import pytest
from rich.console import Console

from studio_client import errors
from studio_client.cli import errors as exits
from studio_client.cli.options import Ratios
from studio_client.cli.output import Output, number, percent, size, table, to_json, when
from studio_client.models import Project


def test_structs_lists_and_dicts_become_one_json_document() -> None:
    doc = {"items": [Project(id="p1", name="birds")], "n": 1}
    decoded = json.loads(to_json(doc))
    assert decoded["items"][0]["id"] == "p1" and decoded["items"][0]["status"] == "active"
    assert decoded["n"] == 1


def test_json_mode_writes_the_result_and_never_calls_the_human_view(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = Output(json=True)
    output.result([1, 2], lambda out: pytest.fail("drawn for people under --json"))
    assert json.loads(capsys.readouterr().out) == [1, 2]


def test_figures_for_people() -> None:
    assert (size(None), size(512), size(1536), size(12 * 1024**2)) == (
        "",
        "512 B",
        "1.5 KiB",
        "12.0 MiB",
    )
    assert (percent(None), percent(0.9731), percent(1, 0)) == ("", "97.3%", "100%")
    assert (number(None), number(0.123456)) == ("", "0.1235")
    assert when("2026-12-01T03:40:12.5Z") == "2026-12-01 03:40"
    assert when(None) == "" and when("yesterday") == "yesterday"


def test_a_table_shows_every_cell_and_none_as_empty() -> None:
    console = Console(file=io.StringIO(), width=120)
    console.print(table(("id", "n"), [("a" * 32, 3), ("b", None)], numeric=("n",)))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "a" * 32 in text and "None" not in text


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("0.7,0.3", "three fractions"),
        ("0.7,x,0.1", "not a number"),
        ("0.5,0.5,0.5", "adds up to 1.5"),
        ("1.2,-0.1,-0.1", "between 0 and 1"),
        ("0,0.5,0.5", "train fraction"),
        ("nan,0.5,0.5", "between 0 and 1"),
    ],
)
def test_bad_ratios_are_refused_before_anything_is_sent(given: str, why: str) -> None:
    with pytest.raises(click.BadParameter, match=why):
        Ratios().convert(given, None, None)


def test_good_ratios_are_three_floats() -> None:
    assert Ratios().convert("0.7, 0.15,0.15", None, None) == (0.7, 0.15, 0.15)
    assert Ratios().convert("1,0,0", None, None) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.Unauthorized, exits.AUTH),
        (errors.Forbidden, exits.AUTH),
        (errors.NotFound, exits.NOT_FOUND),
        (errors.ValidationFailed, exits.USAGE),
        (errors.Unavailable, exits.UNAVAILABLE),
        (errors.Conflict, exits.FAILED),
        (errors.StudioError, exits.FAILED),
    ],
)
def test_each_refusal_has_its_exit_code(error: type[errors.StudioError], code: int) -> None:
    assert exits.failure_of(error("X", "no")).exit_code == code


def test_a_failure_shows_the_envelopes_message_code_and_request_id() -> None:
    refusal = errors.ValidationFailed(
        "VALIDATION_ERROR",
        "must add up to 1",
        field="ratios",
        request_id="rid-1",
        details=[{"field": "ratios", "message": "x"}, {"field": "seed", "message": "too big"}],
    )
    out = io.StringIO()
    exits.failure_of(refusal).show(out)
    text = out.getvalue()
    assert text.startswith("error: ratios: must add up to 1\n")  # the field named
    assert "seed: too big" in text and "code VALIDATION_ERROR, request id rid-1" in text


def test_an_expired_session_says_how_to_sign_in_again() -> None:
    out = io.StringIO()
    exits.failure_of(errors.Unauthorized("UNAUTHORIZED", "token expired")).show(out)
    assert "studio login" in out.getvalue()
