"""What the WebSocket hub makes of a client's message, before any feed is opened: its type and
payload, the one id it names, and where a replay starts; anything else is refused with a code
and a message (an ``error`` frame, the socket left open)."""

from __future__ import annotations

import pytest

from services.gateway.api.hub import MESSAGE_MAX, Refused, _after, _parse, _topic


def test_a_subscription_names_its_type_payload_and_one_id():
    kind, payload = _parse('{"type": "subscribe", "payload": {"run_id": "abc123"}}')
    assert (kind, payload) == ("subscribe", {"run_id": "abc123"})
    assert _topic(payload) == ("run_id", "abc123")
    assert _after(payload) == 0
    assert _after({"last_event_id": "42"}) == _after({"last_event_id": 42}) == 42


def test_a_message_without_a_payload_has_an_empty_one():
    assert _parse('{"type": "ping"}') == ("ping", {})


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (None, None),  # a binary frame
        ("not json", None),
        ("[1, 2]", "type"),
        ('{"payload": {}}', "type"),
        ('{"type": 3}', "type"),
        ('{"type": "subscribe", "payload": [1]}', "payload"),
        ('{"type": "subscribe", "payload": {"run_id": "' + "x" * MESSAGE_MAX + '"}}', None),
    ],
)
def test_a_malformed_message_is_refused_saying_why(text, field):
    with pytest.raises(Refused) as refused:
        _parse(text)
    assert refused.value.payload["code"] == "VALIDATION_ERROR"
    assert refused.value.payload["message"]
    assert refused.value.payload.get("field") == field


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, "VALIDATION_ERROR"),
        ({"run_id": "a", "import_id": "b"}, "VALIDATION_ERROR"),
        ({"job_id": "a"}, "VALIDATION_ERROR"),
        ({"run_id": "../etc"}, "NOT_FOUND"),
        ({"run_id": 7}, "NOT_FOUND"),
        ({"experiment_id": ""}, "NOT_FOUND"),
    ],
)
def test_a_subscription_names_exactly_one_well_formed_id(payload, code):
    with pytest.raises(Refused) as refused:
        _topic(payload)
    assert refused.value.payload["code"] == code


@pytest.mark.parametrize("after", [-1, "x", "1.5", True, 10**18, [1]])
def test_a_replay_starts_after_a_stream_sequence_only(after):
    with pytest.raises(Refused) as refused:
        _after({"last_event_id": after})
    assert refused.value.payload["field"] == "last_event_id"
