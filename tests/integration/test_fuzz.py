"""A bounded fuzz of the whole REST API from its own OpenAPI schema (schemathesis).

Every operation the gateway documents is called with generated input, valid and invalid, and
every answer must be no server error (5xx) and match the response the schema documents for its
status: the ``{"status": "error", ...}`` envelope for every 4xx and 5xx.

Two passes: a fixed one (derandomized: the same examples every run, so a failure reproduces),
then a few new random examples per operation, whose seed is printed, to find what the fixed
pass does not (``STUDIO_FUZZ_SEED=<seed>`` replays it; ``STUDIO_FUZZ_NEW=<n>`` runs more).

Nothing is excluded: the streaming routes answer 404 at once for an id that names nothing,
which is all a generated id can do, and every call has a timeout in case one streams.
"""

from __future__ import annotations

import os

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.gateway.app import create_app
from services.kernel.settings import Settings
from tests.stack import Stack

pytestmark = pytest.mark.integration

#: Examples per operation in the fixed pass (besides schemathesis' own boundary cases).
FIXED_EXAMPLES = 25
#: New random examples per operation in the second pass.
NEW_EXAMPLES = int(os.environ.get("STUDIO_FUZZ_NEW", "5"))
#: Seconds one call may take; a command's slowest honest answer is a few seconds.
CALL_TIMEOUT_S = 30
CHECKS = [not_a_server_error, response_schema_conformance]
QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]


def _schema() -> schemathesis.BaseSchema:
    # Built from the gateway's own app, as the running gateway serves it (checked below):
    # schemathesis' lazy ``from_fixture`` loader breaks on pytest 9 (``Node._nodeid``).
    seed = os.environ.get("STUDIO_FUZZ_SEED")
    config = SchemathesisConfig(seed=int(seed) if seed else None)
    return schemathesis.openapi.from_dict(OPENAPI, config=config)


OPENAPI = create_app(Settings.from_env()).openapi()
schema = _schema()


def test_the_fuzzed_schema_is_the_one_the_gateway_serves(stack: Stack):
    served = httpx.get(f"{stack.base_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == OPENAPI
    print(f"seed of the new examples: {schema.config.seed} (STUDIO_FUZZ_SEED replays it)")


@schema.parametrize()
@hypothesis.settings(
    max_examples=FIXED_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=QUIET,
)
def test_fixed_examples_get_no_server_error_and_documented_answers(case, stack: Stack):
    case.call_and_validate(base_url=stack.base_url, checks=CHECKS, timeout=CALL_TIMEOUT_S)


@schema.parametrize()
@hypothesis.settings(
    max_examples=NEW_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=QUIET,
    # Random generation only: the explicit (boundary) cases are the fixed pass's.
    phases=[Phase.generate],
)
def test_new_examples_get_no_server_error_and_documented_answers(case, stack: Stack):
    case.call_and_validate(base_url=stack.base_url, checks=CHECKS, timeout=CALL_TIMEOUT_S)
