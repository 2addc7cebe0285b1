"""The hyperparameters' bounds are written once (``contracts.training``) and the three places
that hold them agree: the ``StartRun`` contract, the OpenAPI schema of ``POST /training/run`` and
what the trainer's validation refuses, at each bound and one step past it."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import pydantic
import pytest

from contracts import snapshot
from contracts import training as c
from services.gateway.api.training import HyperparametersIn
from services.gateway.app import create_app
from services.kernel.settings import Settings
from services.trainer.engine.validation import validate

#: JSON Schema's name of each ``msgspec.Meta`` bound.
JSON_BOUND = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
    "max_length": "maxLength",
}


def _bounds(schema: dict[str, Any]) -> dict[str, Any]:
    """A property's bounds and choices, wherever its ``anyOf`` (``X | None``) puts them."""
    out = {k: schema[k] for k in (*JSON_BOUND.values(), "enum") if k in schema}
    for variant in schema.get("anyOf", ()):
        out |= _bounds(variant)
    if "enum" in out:
        out["enum"] = sorted(out["enum"])
    return out


def _floats(bounds: dict[str, Any]) -> dict[str, Any]:
    return {k: v if k == "enum" else float(v) for k, v in bounds.items()}


def _expected(name: str) -> dict[str, Any]:
    if name in c.HYPERPARAMETER_CHOICES:
        return {"enum": sorted(c.HYPERPARAMETER_CHOICES[name])}
    return {JSON_BOUND[k]: v for k, v in c.hyperparameter_bounds(name).items()}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    schemas = create_app(Settings()).openapi()["components"]["schemas"]
    submit = schemas["RunSubmit"]["properties"]["hyperparameters"]["$ref"].rsplit("/", 1)[-1]
    return schemas[submit]["properties"]


def _contract(message: type) -> dict[str, Any]:
    """The properties of the hyperparameters that ``message``'s JSON Schema holds."""
    defs = msgspec.json.schema(message)["$defs"]
    ref = defs[message.__name__]["properties"]["hyperparameters"]["$ref"]
    return defs[ref.rsplit("/", 1)[-1]]["properties"]


NAMES = [f.name for f in msgspec.structs.fields(c.Hyperparameters)]


@pytest.mark.parametrize("name", NAMES)
def test_the_contract_and_the_openapi_schema_show_the_same_bounds(openapi, name):
    contract = _contract(c.StartRun)[name]
    assert _bounds(contract) == _expected(name)
    # pydantic writes a bound as a float (the seed's 2**63 - 1 too): compare them as floats
    assert _floats(_bounds(openapi[name])) == _floats(_expected(name))
    assert contract.get("default") == openapi[name].get("default")


def test_the_stored_event_stays_unbounded():
    # RunQueued's old events must decode whatever the bounds become.
    stored = _contract(c.RunQueued)
    assert stored.keys() == set(NAMES)
    assert all(_bounds(schema) == {} for schema in stored.values())


def test_every_place_has_the_same_defaults():
    event = msgspec.structs.asdict(c.Hyperparameters())
    assert msgspec.structs.asdict(c.HyperparametersIn()) == event
    assert HyperparametersIn().model_dump() == event
    assert validate(c.Hyperparameters()) == []


def _string(length: int) -> str:
    """A path of ``length`` characters whose names a file system holds (100 bytes each)."""
    return (("x" * 99 + "/") * (length // 100 + 1))[:length]


def _cases() -> list[tuple[str, Any, bool]]:
    """(name, value, refused) at each bound and one step past it."""
    cases = []
    for name in c.HYPERPARAMETER_BOUNDS:
        b = c.hyperparameter_bounds(name)
        if "max_length" in b:
            cases += [(name, _string(b["max_length"]), False)]
            cases += [(name, _string(b["max_length"] + 1), True)]
        if "ge" in b:
            cases += [(name, b["ge"], False), (name, b["ge"] - 1, True)]
        if "gt" in b:
            cases += [(name, b["gt"], True), (name, b["gt"] + 1, False)]
        if "le" in b:
            cases += [(name, b["le"], False), (name, b["le"] + 1, True)]
    return cases


@pytest.mark.parametrize(("name", "value", "refused"), _cases())
def test_the_command_the_gateway_and_the_trainer_refuse_alike(name, value, refused):
    try:
        msgspec.convert({name: value}, c.HyperparametersIn)
    except msgspec.ValidationError as err:
        assert refused, err
        assert f"$.{name}" in str(err)
    else:
        assert not refused
    try:
        HyperparametersIn(**{name: value})
    except pydantic.ValidationError as err:
        assert refused, err
        assert [e["loc"] for e in err.errors()] == [(name,)]
    else:
        assert not refused
    problems = validate(c.Hyperparameters(**{name: value}))
    bound_problems = [p for p in problems if p[0] == name and _is_a_bound(p[1])]
    assert bool(bound_problems) == refused, problems


def _is_a_bound(message: str) -> bool:
    # The trainer also checks the model against the zoo and the pretrained file: not bounds.
    return message.startswith("must be") and "for " not in message


@pytest.mark.parametrize("name", list(c.HYPERPARAMETER_CHOICES))
def test_a_word_outside_the_choices_is_refused_everywhere(name):
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({name: "bogus"}, c.HyperparametersIn)
    with pytest.raises(pydantic.ValidationError):
        HyperparametersIn(**{name: "bogus"})
    assert [p[0] for p in validate(c.Hyperparameters(**{name: "bogus"}))] == [name]
    for word in c.HYPERPARAMETER_CHOICES[name]:
        assert validate(c.Hyperparameters(**{name: word})) == []


def test_the_trainer_keeps_its_messages():
    assert validate(c.Hyperparameters(epochs=0)) == [
        ("epochs", "must be between 1 and 1000, not 0")
    ]
    assert validate(c.Hyperparameters(learning_rate=0)) == [
        ("learning_rate", "must be above 0 and at most 10, not 0")
    ]
    assert validate(c.Hyperparameters(seed=-1)) == [("seed", "must be 0 or more, not -1")]
    assert validate(c.Hyperparameters(weight_decay=float("nan")))[0][0] == "weight_decay"
    assert validate(c.Hyperparameters(model="resnet18", image_size=16)) == [
        ("image_size", "must be at least 32 for resnet18, not 16")
    ]


def test_a_command_may_narrow_a_string_to_choices_but_a_stored_event_may_not():
    class Free(msgspec.Struct):
        optimizer: str = "sgd"

    class Chosen(msgspec.Struct):
        optimizer: Literal["sgd", "adamw"] = "sgd"

    old, new = msgspec.json.schema(Free), msgspec.json.schema(Chosen)
    assert snapshot.breaking_changes(old, new, stored=False) == []
    assert snapshot.breaking_changes(old, new, stored=True) != []
