"""A bounded fuzz of the whole REST API from its own OpenAPI schema (schemathesis).

Every operation the gateway documents is called with generated input, valid and invalid, and
every answer must be no server error (5xx) and match the response the schema documents for its
status: the ``{"status": "error", ...}`` envelope for every 4xx and 5xx.

Two passes: a fixed one (derandomized: the same examples every run, so a failure reproduces),
then a few new random examples per operation, whose seed is printed, to find what the fixed
pass does not (``STUDIO_FUZZ_SEED=<seed>`` replays it; ``STUDIO_FUZZ_NEW=<n>`` runs more).

Nothing is excluded: the streaming routes answer 404 at once for an id that names nothing,
which is all a generated id can do, and every call has a timeout in case one streams.

Every example is sent twice, signed in as a user who is no site admin and as the first admin,
each with an API key (a generated sign-out or password change ends sessions, never a key), on
a studio of the module's own whose rate limits keep out of the way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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
from tests.access_helpers import as_user, ok, user
from tests.conftest import services_of
from tests.stack import API, Stack

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


#: Far above what the fuzz sends: it tests answers, not the limits (test_limits does).
UNLIMITED = "1000000/minute"


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("stack"),
        services_of(request),
        STUDIO_RATE_LIMIT_PREMIUM=UNLIMITED,
        STUDIO_RATE_LIMIT_ANONYMOUS=UNLIMITED,
    )
    try:
        yield s.up()
    finally:
        s.down()


@pytest.fixture(scope="module")
def callers(stack: Stack) -> dict[str, dict[str, str]]:
    """The headers of each caller the fuzz signs in as: an API key of each."""
    _, token = user(stack, "fuzz")
    keys = {}
    for who, bearer in (("user", token), ("admin", stack.token())):
        with as_user(stack, bearer) as api:
            key = ok(api.post(f"{API}/auth/keys", json={"name": f"fuzz {who}"}), 201)["key"]
        keys[who] = {"X-API-Key": key}
        me = httpx.get(f"{stack.base_url}{API}/auth/me", headers=keys[who], timeout=10)
        assert ok(me)["site_role"] == who, me.text  # each key signs its caller in
    return keys


def call_as_each(case: schemathesis.Case, stack: Stack, callers: dict[str, dict[str, str]]):
    for headers in callers.values():
        case.call_and_validate(
            base_url=stack.base_url, headers=headers, checks=CHECKS, timeout=CALL_TIMEOUT_S
        )


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
def test_fixed_examples_get_no_server_error_and_documented_answers(case, stack, callers):
    call_as_each(case, stack, callers)


@schema.parametrize()
@hypothesis.settings(
    max_examples=NEW_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=QUIET,
    # Random generation only: the explicit (boundary) cases are the fixed pass's.
    phases=[Phase.generate],
)
def test_new_examples_get_no_server_error_and_documented_answers(case, stack, callers):
    call_as_each(case, stack, callers)
