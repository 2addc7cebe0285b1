"""The bus, documented: an AsyncAPI 3.0 document of every NATS subject, made from ``contracts``.

Every subject a context declares (its ``Subjects`` classes) is a request/reply operation: the
command (or query) its service receives, and the reply it answers with. Every context's events
are one channel (``evt.<context>.{id}``, its JetStream stream), the live progress subjects another
two, and every service answers ``svc.health.{service}`` and ``svc.rebuild.{service}``. Message
payloads are the contracts' JSON Schemas (``msgspec.json.schema_components``), so the document
cannot drift from what the services send: a subject without a contract type, or a type without
a place in the document, fails here. ``python -m contracts.asyncapi`` prints it.

A leaf module: imports msgspec, the standard library and ``contracts`` only.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, Final, NamedTuple

import msgspec

import contracts
from contracts import common, datasets, exports, identity, projects, training
from contracts.envelope import tag_of

VERSION: Final = "3.0.0"
CONTEXTS: Final = (identity, projects, datasets, training, exports)
SCHEMAS: Final = "#/components/schemas/"
Json = dict[str, Any]


# --- the live subjects' payloads: core NATS, never stored, so no envelope and no tag ---------


class ImportProgress(msgspec.Struct, frozen=True):
    """An import's progress, a few times a second while it runs (``live.datasets.import.{id}``)."""

    import_id: str
    phase: str
    done: int
    total: int
    #: Files per second while decoding.
    rate: float
    eta_s: float | None


class BatchProgress(msgspec.Struct, frozen=True):
    """A running run's batch progress, a few times a second (``live.training.{run_id}``)."""

    run_id: str
    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    running_loss: float
    eta_s: float


LIVE: Final = (ImportProgress, BatchProgress)

#: A query's reply type: queries are named for what they ask, so it is said here, once.
QUERY_REPLIES: Final[dict[type[contracts.Message], type[contracts.Message]]] = {
    datasets.GetHealth: datasets.HealthReport,
    datasets.GetSubset: datasets.SubsetPage,
    datasets.GetBlob: datasets.BlobChunk,
    exports.Predict: exports.Predictions,
}
#: Commands answered with a reply of their own context instead of ``CommandAccepted``.
COMMAND_REPLIES: Final[dict[type[contracts.Message], type[contracts.Message]]] = {
    identity.Login: identity.SessionIssued,
    identity.RefreshSession: identity.SessionIssued,
    identity.IssueApiKey: identity.ApiKeyCreated,
    datasets.CollectGarbage: datasets.GarbageReport,
}

#: The NATS headers each kind of message carries (names as the kernel writes them).
HEADERS: Final[dict[str, Json]] = {
    "RequestHeaders": {
        "traceparent": "W3C trace context of the sender's span.",
        "tracestate": "W3C trace state, when there is one.",
        "Studio-Request-Id": "The gateway's request id (X-Request-ID): the logs name it.",
    },
    "ReplyHeaders": {
        "traceparent": "W3C trace context of the replying span.",
    },
    "EventHeaders": {
        "Nats-Msg-Id": "Deduplicates an append retried (derived from the command's id).",
        "Nats-Expected-Last-Subject-Sequence": "Optimistic concurrency on the aggregate.",
        "Studio-Event-Type": "The event's versioned tag, as in its body's ``type``.",
        "Studio-Correlation-Id": "The request the event came from.",
        "Studio-Causation-Id": "The message that caused it.",
        "traceparent": "W3C trace context of the append, for the projections' spans.",
    },
}


class Request(NamedTuple):
    """A request/reply subject: what is sent on it, and what comes back."""

    subject: str
    request: type[contracts.Message]
    replies: tuple[type[contracts.Message], ...]


def _subjects(context: ModuleType) -> Iterator[str]:
    for name, holder in vars(context).items():
        if name.endswith("Subjects") and inspect.isclass(holder):
            yield from (v for k, v in vars(holder).items() if k.isupper() and isinstance(v, str))


def _type_of(context: ModuleType, subject: str) -> type[contracts.Message]:
    """The contract type sent on ``cmd.<context>.<name>`` (tag ``<context>.<name>.vN``), or on
    ``qry.<context>.<name>`` (tag ``<context>.<name>`` or ``<context>.get_<name>``)."""
    kind, ctx, name = subject.split(".", 2)
    names = (name,) if kind == "cmd" else (name, f"get_{name}")
    found = [t for t in context.ALL if tag_of(t).rsplit(".", 1)[0] in {f"{ctx}.{n}" for n in names}]
    if len(found) != 1:
        raise LookupError(f"{subject}: {len(found)} contract types match, not one")
    return found[0]


def requests() -> list[Request]:
    """Every command and query subject of every context, with its request and reply types."""
    out = []
    for context in CONTEXTS:
        for subject in sorted(_subjects(context)):
            sent = _type_of(context, subject)
            if subject.startswith("qry."):
                answer = QUERY_REPLIES[sent]
            else:
                answer = COMMAND_REPLIES.get(sent, common.CommandAccepted)
            out.append(Request(subject, sent, (answer, common.CommandRejected)))
    return out


def _aggregate_ids(context: ModuleType) -> list[str]:
    """The names of the ids in a context's event subjects: ``event_subject``'s parameter first,
    then those of its other ``evt.`` subject functions (training's ``evaluation_subject``)."""
    names = []
    for name, function in vars(context).items():
        subject = name.endswith("_subject") and inspect.isfunction(function)
        if subject and function("id").startswith("evt."):
            names.append(next(iter(inspect.signature(function).parameters)))
    first = next(iter(inspect.signature(context.event_subject).parameters))
    return [first, *(n for n in names if n != first)]


def _ref(name: str) -> Json:
    return {"$ref": name}


def _channel(
    address: str | None, types: Sequence[type], description: str, parameter: str = ""
) -> Json:
    """A channel; an address's ``{name}`` is a parameter, described by ``parameter``."""
    channel: Json = {
        "address": address,
        "description": description,
        "messages": {t.__name__: _ref(f"#/components/messages/{t.__name__}") for t in types},
    }
    params = [p.strip("{}") for p in (address or "").split(".") if p.startswith("{")]
    if params:
        channel["parameters"] = {
            p: {"description": parameter or f"The {p.replace('_', ' ')}."} for p in params
        }
    return channel


def _operation(
    action: str, channel: str, types: Sequence[type], summary: str, reply: Json | None = None
) -> Json:
    operation: Json = {
        "action": action,
        "channel": _ref(f"#/channels/{channel}"),
        "summary": summary,
        "messages": [_ref(f"#/channels/{channel}/messages/{t.__name__}") for t in types],
    }
    if reply is not None:
        operation["reply"] = reply
    return operation


def _request_reply(
    channels: Json, operations: Json, ids: tuple[str, str], req: Request, description: str
) -> None:
    """A request channel, its reply channel (the requester's inbox) and the operation joining
    them; ``ids``: the operation's and the request channel's."""
    op_id, channel_id = ids
    parameter = "A service's name: identity, projects, datasets, trainer, exporter, gateway."
    channels[channel_id] = _channel(req.subject, (req.request,), description, parameter)
    reply_id = f"{channel_id}.reply"
    channels[reply_id] = _channel(
        None, req.replies, f"The reply to {req.subject}, on the requester's inbox."
    )
    reply = {
        "channel": _ref(f"#/channels/{reply_id}"),
        "messages": [_ref(f"#/channels/{reply_id}/messages/{t.__name__}") for t in req.replies],
    }
    summary = _summary(req.request) or f"{req.request.__name__}, answered by its service."
    operations[op_id] = _operation("receive", channel_id, (req.request,), summary, reply)


def _summary(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _events(channels: Json, operations: Json) -> None:
    for context in CONTEXTS:
        ids = _aggregate_ids(context)
        address = context.event_subject(f"{{{ids[0]}}}")
        channel_id = address.rsplit(".", 1)[0]
        events = typing.get_args(context.Event)
        channels[channel_id] = _channel(
            address,
            events,
            f"Every event of one aggregate, stored in the {context.STREAM} JetStream stream "
            f"(subjects {context.EVENTS}).",
            parameter="The aggregate's id: its " + " or ".join(n.replace("_", " ") for n in ids),
        )
        summary = f"The {context.CONTEXT} service appends its events (append is publish)."
        operations[f"{context.CONTEXT}.events"] = _operation("send", channel_id, events, summary)


def _live(channels: Json, operations: Json) -> None:
    for op_id, address, payload, parameter in (
        (
            "datasets.import_progress",
            datasets.progress_subject("{import_id}"),
            ImportProgress,
            "The import's id.",
        ),
        (
            "training.batch_progress",
            training.progress_subject("{run_id}"),
            BatchProgress,
            "The run's id.",
        ),
    ):
        channel_id = address.rsplit(".", 1)[0]
        description = "Core NATS, not stored: disposable live progress."
        channels[channel_id] = _channel(address, (payload,), description, parameter)
        operations[op_id] = _operation("send", channel_id, (payload,), _summary(payload))


def _control(channels: Json, operations: Json) -> None:
    for op_id, subject, request, answer, what in (
        ("svc.health", common.health_subject, common.Ping, common.Pong, "is alive"),
        (
            "svc.rebuild",
            common.rebuild_subject,
            common.RebuildReadModel,
            common.ReadModelRebuilt,
            "rebuilds its read model by replay",
        ),
    ):
        req = Request(subject("{service}"), request, (answer, common.CommandRejected))
        description = f"Every instance of a service answers whether it {what}."
        _request_reply(channels, operations, (op_id, op_id), req, description)


def _roles() -> dict[type, str]:
    """Each message type's role: a request, a reply, an event or a live message."""
    roles: dict[type, str] = dict.fromkeys(LIVE, "live")
    roles |= {t: "event" for c in CONTEXTS for t in typing.get_args(c.Event)}
    answers = {*QUERY_REPLIES.values(), *COMMAND_REPLIES.values()}
    answers |= {common.CommandAccepted, common.CommandRejected, common.Pong}
    answers |= {common.ReadModelRebuilt}
    roles |= dict.fromkeys(answers, "reply")
    every: tuple[type, ...] = (*contracts.ALL, *LIVE)
    return {t: roles.get(t, "request") for t in every}


def _messages() -> Json:
    headers = {
        "request": "RequestHeaders",
        "reply": "ReplyHeaders",
        "event": "EventHeaders",
    }
    messages: Json = {}
    for cls, role in _roles().items():
        message: Json = {
            "name": cls.__name__,
            "title": cls.__name__,
            "contentType": "application/json",
            "payload": _ref(SCHEMAS + cls.__name__),
        }
        if summary := _summary(cls):
            message["summary"] = summary
        if cls not in LIVE:
            message["tags"] = [{"name": tag_of(cls).split(".")[0]}, {"name": role}]
        if (kind := headers.get(role)) is not None:
            message["headers"] = _ref(SCHEMAS + kind)
        messages[cls.__name__] = message
    return messages


def _schemas() -> Json:
    _, schemas = msgspec.json.schema_components(
        (*contracts.ALL, *LIVE), ref_template=SCHEMAS + "{name}"
    )
    for name, fields in HEADERS.items():
        schemas[name] = {
            "type": "object",
            "properties": {h: {"type": "string", "description": d} for h, d in fields.items()},
        }
    return dict(sorted(schemas.items()))


def document() -> Json:
    """The AsyncAPI 3.0 document of the studio's bus."""
    channels: Json = {}
    operations: Json = {}
    for req in requests():
        op_id = tag_of(req.request).rsplit(".", 1)[0]
        kind = "Query" if req.subject.startswith("qry.") else "Command"
        description = f"{kind} {req.request.__name__}: one instance of its service answers."
        _request_reply(channels, operations, (op_id, req.subject), req, description)
    _events(channels, operations)
    _live(channels, operations)
    _control(channels, operations)
    return {
        "asyncapi": VERSION,
        "info": {
            "title": "AI Studio bus",
            "version": "1",
            "description": (
                "Every NATS subject of the studio: commands and queries by request/reply "
                "(cmd.<context>.<name>, qry.<context>.<name>), events stored in one JetStream "
                "stream per context (evt.<context>.<id>), live progress on core NATS "
                "(live.*), and each service's health and rebuild subjects (svc.*). "
                "Generated from contracts/."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The studio's NATS (STUDIO_NATS_URL); JetStream for the events.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": _messages(), "schemas": _schemas()},
    }


def main() -> None:
    print(json.dumps(document(), indent=2))


if __name__ == "__main__":
    main()
