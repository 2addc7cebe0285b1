"""The AsyncAPI document of the bus (contracts/asyncapi.py): every contract in it, structurally
valid AsyncAPI 3.0, and naming the subjects and headers the services really use."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import contracts
from contracts import asyncapi, datasets, projects
from services.datasets.importer import Job
from services.kernel import eventstore
from services.kernel.logs import REQUEST_ID_HEADER

ROOT = Path(__file__).resolve().parents[2]
DOC = asyncapi.document()


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = DOC
    for part in pointer[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{pointer}: no {part!r}"
        node = node[part]
    return node


def test_every_contract_type_is_a_message_with_its_schema() -> None:
    messages = DOC["components"]["messages"]
    for cls in contracts.ALL:
        assert cls.__name__ in messages, cls
        payload = resolve(messages[cls.__name__]["payload"]["$ref"])
        assert payload["properties"]["type"] == {"enum": [asyncapi.tag_of(cls)]}


def test_every_contract_type_is_carried_by_some_channel() -> None:
    carried = {
        ref.rsplit("/", 1)[-1] for channel in DOC["channels"].values() for ref in refs(channel)
    }
    assert {cls.__name__ for cls in contracts.ALL} <= carried


def test_every_ref_resolves() -> None:
    found = list(refs(DOC))
    assert len(found) > 300
    for pointer in found:
        resolve(pointer)


def test_the_required_asyncapi_3_keys_are_there() -> None:
    assert DOC["asyncapi"] == "3.0.0"
    assert DOC["info"]["title"] and DOC["info"]["version"]
    for server in DOC["servers"].values():
        assert server["host"] and server["protocol"] == "nats"
    for name, message in DOC["components"]["messages"].items():
        assert message["name"] == name and "payload" in message
    # the spec's rule for the keys of every components map
    for kind, members in DOC["components"].items():
        for key in members:
            assert re.fullmatch(r"[\w\d.\-_]+", key, re.ASCII), (kind, key)
    json.dumps(DOC)  # plain JSON throughout


def test_every_channel_has_an_address_and_its_parameters() -> None:
    for channel_id, channel in DOC["channels"].items():
        assert "address" in channel, channel_id
        address = channel["address"]
        if address is None:  # a reply: the requester's inbox
            assert channel_id.endswith(".reply")
            continue
        params = {p.strip("{}") for p in address.split(".") if p.startswith("{")}
        assert set(channel.get("parameters", {})) == params, channel_id
        assert channel["messages"], channel_id


def test_every_operation_names_an_existing_channel_and_its_messages() -> None:
    for op_id, operation in DOC["operations"].items():
        assert operation["action"] in ("send", "receive"), op_id
        channel_ref = operation["channel"]["$ref"]
        resolve(channel_ref)
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), op_id
            resolve(message["$ref"])
        if reply := operation.get("reply"):
            reply_ref = reply["channel"]["$ref"]
            for message in reply["messages"]:
                assert message["$ref"].startswith(reply_ref + "/messages/"), op_id
                resolve(message["$ref"])


def test_commands_are_request_reply_on_their_subjects() -> None:
    # given a command's subject as the projects context declares it
    channel = DOC["channels"][projects.Subjects.CREATE]
    assert channel["address"] == "cmd.projects.create_project"
    assert set(channel["messages"]) == {"CreateProject"}
    # then its operation is received by its service and answered with the command replies
    operation = DOC["operations"]["projects.create_project"]
    assert operation["action"] == "receive"
    replies = {ref["$ref"].rsplit("/", 1)[-1] for ref in operation["reply"]["messages"]}
    assert replies == {"CommandAccepted", "CommandRejected"}
    login = DOC["operations"]["identity.login"]["reply"]["messages"]
    assert {ref["$ref"].rsplit("/", 1)[-1] for ref in login} == {"SessionIssued", "CommandRejected"}
    health = DOC["operations"]["datasets.get_health"]
    assert resolve(health["channel"]["$ref"])["address"] == datasets.Subjects.HEALTH


def test_every_declared_subject_is_documented() -> None:
    addresses = {c["address"] for c in DOC["channels"].values()}
    for context in asyncapi.CONTEXTS:
        for subject in asyncapi._subjects(context):
            assert subject in addresses
        assert context.event_subject("{" + asyncapi._aggregate_ids(context)[0] + "}") in addresses
        events = DOC["channels"][f"evt.{context.CONTEXT}"]["messages"]
        assert set(events) == {t.__name__ for t in typing.get_args(context.Event)}
    assert {"svc.health.{service}", "svc.rebuild.{service}"} <= addresses
    assert {"live.datasets.import.{import_id}", "live.training.{run_id}"} <= addresses


def test_the_headers_are_those_the_kernel_writes() -> None:
    request = DOC["components"]["schemas"]["RequestHeaders"]["properties"]
    assert REQUEST_ID_HEADER in request and "traceparent" in request
    stored = DOC["components"]["schemas"]["EventHeaders"]["properties"]
    kernel = {eventstore.H_MSG_ID, eventstore.H_EXPECTED, eventstore.H_EVENT_TYPE}
    assert kernel | {eventstore.H_CORRELATION, eventstore.H_CAUSATION} <= set(stored)


def test_an_imports_live_progress_is_what_the_datasets_service_publishes() -> None:
    command = datasets.StartImport(dataset_id="d", import_id="i", source_kind="local", source="x")
    published = Job(command=command, root=Path()).progress()
    assert set(published) == set(asyncapi.ImportProgress.__struct_fields__)
    msgspec.convert(published, asyncapi.ImportProgress)


def test_a_runs_live_progress_is_what_the_trainer_publishes() -> None:
    # the trainer builds its progress message as a dict literal: read its keys from the source
    tree = ast.parse((ROOT / "services/trainer/bridge.py").read_text())
    literals = [
        {k.value for k in node.keys if isinstance(k, ast.Constant)}
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
    ]
    published = [keys for keys in literals if {"batch", "batches"} <= keys]
    assert published == [set(asyncapi.BatchProgress.__struct_fields__)]


def test_the_module_prints_the_document() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "contracts.asyncapi"], capture_output=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout) == json.loads(json.dumps(DOC))


@pytest.mark.parametrize("cls", asyncapi.LIVE)
def test_live_payloads_are_described(cls: type) -> None:
    assert DOC["components"]["messages"][cls.__name__]["summary"]
