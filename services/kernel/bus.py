"""NATS wiring: connecting, sending commands, and command endpoints that always reply.

A faststream handler that raises sends no reply and its caller just times out, so every
endpoint here catches everything and answers with a ``CommandRejected``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import msgspec
from fast_depends.msgspec import MsgSpecSerializer
from faststream.nats import NatsBroker, NatsResponse
from faststream.nats.annotations import NatsMessage
from faststream.nats.security import NatsCredentials, NatsNKey
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from contracts import Message
from contracts.common import INTERNAL, UNAVAILABLE, VALIDATION_ERROR, CommandRejected, Reply
from services.kernel import natsauth, tracing
from services.kernel.logs import request_scope
from services.kernel.settings import Settings
from services.kernel.telemetry import COMMAND_SECONDS, COMMANDS
from services.kernel.transient import is_transient

log = logging.getLogger(__name__)
C = TypeVar("C", bound=Message)
R = TypeVar("R")

#: Backoff between sends of a command while its service has no responder (being restarted).
FIRST_RESEND_S = 0.05
LAST_RESEND_S = 0.5
#: A connection's server that answers no PING for ``MAX_OUTSTANDING_PINGS`` of these is left
#: for another node (a hung or cut-off machine: no RST says it is gone). nats-py's own default,
#: 120 s and 2, kept a cluster's clients on a frozen node for up to 6 minutes.
PING_INTERVAL_S = 3
MAX_OUTSTANDING_PINGS = 2


class NatsUnavailable(SystemExit):
    """NATS could not be reached: a message for people, not a traceback."""


#: The last error NATS gave each broker's connection (a refused password, a denied subject).
_LAST_ERROR: weakref.WeakKeyDictionary[NatsBroker, Exception] = weakref.WeakKeyDictionary()
_REFUSALS = ("authorization violation", "permissions violation", "authentication")


def make_broker(url: str, name: str, **options: Any) -> NatsBroker:
    """A broker for ``url`` (comma-separated servers); ``options`` are nats-py connect options,
    the credentials of :func:`credentials` among them. A subject the server refuses to this
    user is logged as an error: a denied publish or subscribe is otherwise silent."""
    box: list[NatsBroker] = []

    async def on_error(exc: Exception) -> None:
        if box:
            _LAST_ERROR[box[0]] = exc
        if _refused(exc):
            log.error("NATS refused %s: %s", name, exc)
        else:
            log.debug("NATS connection of %s: %r", name, exc)

    broker = NatsBroker(
        [u.strip() for u in url.split(",") if u.strip()],
        serializer=MsgSpecSerializer(),
        logger=None,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        ping_interval=PING_INTERVAL_S,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        error_cb=on_error,
        **_faststream_options(options),
    )
    box.append(broker)
    return broker


def _faststream_options(options: dict[str, Any]) -> dict[str, Any]:
    """nats-py's credential options as faststream takes them (its ``security=``)."""
    rest = dict(options)
    if "nkeys_seed" in rest:
        rest["security"] = NatsNKey.from_file(rest.pop("nkeys_seed"))
    elif "user_credentials" in rest:
        rest["security"] = NatsCredentials.from_file(rest.pop("user_credentials"))
    return rest


def credentials(settings: Settings, user: str) -> dict[str, Any]:
    """The connect options of ``user`` (a service's name): none when ``STUDIO_NATS_URL`` names
    a user and password, else ``STUDIO_NATS_CREDS`` when set, else the seed the embedded server
    generated into the workspace, else none."""
    if "@" in settings.nats_url:
        return {}
    folder = natsauth.secrets_dir(settings.workspace)
    creds = natsauth.credentials_file(settings.nats_creds, folder, user)
    return natsauth.client_options(creds, user)


def service_broker(settings: Settings, service: str) -> NatsBroker:
    """The broker a service connects with: its name, its instance, its own credentials."""
    options = credentials(settings, service)
    return make_broker(settings.nats_url, name=f"{service}@{settings.instance}", **options)


async def connect(broker: NatsBroker, url: str, timeout: float) -> None:
    """Connect, or exit with a clear message when no NATS server answers at ``url`` or it
    refuses the credentials."""
    try:
        await asyncio.wait_for(broker.connect(), timeout)
    except (TimeoutError, OSError, NatsError) as exc:
        last = _LAST_ERROR.get(broker) or exc
        if _refused(last):
            raise NatsUnavailable(
                f"NATS at {_without_userinfo(url)} refused the credentials ({last}). Check "
                "STUDIO_NATS_CREDS, or the user and password in STUDIO_NATS_URL."
            ) from None
        raise NatsUnavailable(
            f"Cannot reach NATS at {_without_userinfo(url)} ({type(exc).__name__}). Start it "
            "with `studio up`, or point STUDIO_NATS_URL at a running server."
        ) from None


def _refused(exc: Exception) -> bool:
    """Whether NATS refused the credentials or a subject (rather than being unreachable)."""
    return any(word in str(exc).lower() for word in _REFUSALS)


def _without_userinfo(url: str) -> str:
    """``url`` without any password in it, for messages."""
    return ",".join(u.rsplit("@", 1)[-1] for u in url.split(","))


async def stop_broker(broker: NatsBroker, timeout: float = 5.0) -> None:
    """Drain and close; NATS may already be gone, and a shutdown must not hang on it."""
    try:
        await asyncio.wait_for(broker.stop(), timeout)
    except Exception as exc:
        log.warning("closing the NATS connection: %s", exc or type(exc).__name__)


async def ask(
    nc: NATS,
    subject: str,
    data: bytes,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    responder_wait: float = 0.0,
    name: str = "",
) -> Msg:
    """One request/reply that rides out a restart of its responder (for commands and queries).

    While no one listens on ``subject`` (a service being restarted), the request is sent again
    with backoff for up to ``responder_wait`` seconds, then ``NoRespondersError`` is raised.
    Resending is safe: NATS answers "no responders" only when it delivered the request to
    nobody. A timeout is never resent (the responder may be acting on it): it is raised.

    It is one span, ``send <name>`` for a command or ``query <name>`` for a query (``name``:
    the message's type), child of the current span or else of ``headers``' trace context,
    which the request carries on.
    """
    verb = "query" if subject.startswith("qry.") else "send"
    kind, context = tracing.SpanKind.CLIENT, tracing.parent(headers)
    with tracing.span(f"{verb} {name or subject}", kind=kind, context=context) as s:
        if s.is_recording():
            s.set_attribute("messaging.system", "nats")
            s.set_attribute("messaging.destination.name", subject)
        sent = tracing.inject(dict(headers or {}))
        return await _resend(nc, subject, data, timeout, sent, responder_wait)


async def _resend(
    nc: NATS,
    subject: str,
    data: bytes,
    timeout: float,
    headers: dict[str, str],
    responder_wait: float,
) -> Msg:
    deadline = time.monotonic() + responder_wait
    pause = FIRST_RESEND_S
    while True:
        try:
            return await nc.request(subject, data, timeout=timeout, headers=headers)
        except NoRespondersError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, LAST_RESEND_S)


async def request(
    broker: NatsBroker,
    subject: str,
    command: Message,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    responder_wait: float = 0.0,
) -> Reply:
    """Send a command; a missing or silent service becomes an UNAVAILABLE rejection.

    A service being restarted is waited for up to ``responder_wait`` seconds (see ``ask``), so
    that a restart is invisible to the caller. A command that did reach its service is stored
    once even if sent twice: its events' ``Nats-Msg-Id`` derive from its ``message_id``.
    """
    return await query(
        broker,
        subject,
        command,
        Reply,  # type: ignore[arg-type]
        timeout=timeout,
        headers=headers,
        responder_wait=responder_wait,
    )


async def query(
    broker: NatsBroker,
    subject: str,
    message: Message,
    reply_type: type[R],
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    responder_wait: float = 0.0,
) -> R | CommandRejected:
    """Ask a service (a command or a query) and decode its reply as ``reply_type`` or a
    refusal; a missing or silent service becomes an UNAVAILABLE rejection, as for commands."""
    try:
        msg = await ask(
            broker.connection,
            subject,
            msgspec.json.encode(message),
            timeout=timeout,
            headers=headers,
            responder_wait=responder_wait,
            name=type(message).__name__,
        )
    except NoRespondersError:
        waited = f" (waited {responder_wait:g}s)" if responder_wait > 0 else ""
        return CommandRejected(
            code=UNAVAILABLE, message=f"no service is listening on {subject}{waited}"
        )
    except (NatsTimeoutError, TimeoutError):
        return CommandRejected(
            code=UNAVAILABLE, message=f"no answer on {subject} within {timeout:g}s"
        )
    reply: R | CommandRejected = reply_decoder(reply_type).decode(msg.data)
    return reply


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def reply_decoder(reply_type: Any) -> msgspec.json.Decoder[Any]:
    """The decoder of ``reply_type`` or a refusal: one per reply type, built once."""
    if reply_type not in _DECODERS:
        _DECODERS[reply_type] = msgspec.json.Decoder(reply_type | CommandRejected)
    return _DECODERS[reply_type]


def counted_reply(service: str, name: str, started: float, reply: Any, success: str) -> bytes:
    """Count an endpoint's reply (by its refusal code, else ``success``), time it since
    ``started`` (``perf_counter``), and encode it."""
    outcome = reply.code if isinstance(reply, CommandRejected) else success
    seconds = time.perf_counter() - started
    COMMANDS.labels(service, name, outcome).inc()
    COMMAND_SECONDS.labels(service, name).observe(seconds)
    ms = round(seconds * 1000, 1)
    log.info("%s %s in %.1f ms", name, outcome, ms, extra={"outcome": outcome, "duration_ms": ms})
    return msgspec.json.encode(reply)


@contextmanager
def serving(verb: str, name: str, headers: Mapping[str, str] | None) -> Iterator[None]:
    """The span of an endpoint answering a message (``handle <Command>``, ``query <Query>``):
    child of the trace context the message carries."""
    kind = tracing.SpanKind.SERVER
    with tracing.span(f"{verb} {name}", kind=kind, context=tracing.extract(headers)) as s:
        if s.is_recording():
            s.set_attribute("messaging.system", "nats")
        yield


def traced_reply(body: bytes) -> NatsResponse:
    """A reply that carries the current trace context back to the asker. (An endpoint is
    annotated as returning this type: faststream validates a return against its annotation,
    and ``bytes | NatsResponse`` fails that, leaving the asker without a reply.)"""
    headers: dict[str, str] = {}
    tracing.inject(headers)
    return NatsResponse(body, headers=headers or None)


def command_endpoint(
    service: str,
    command_type: type[C],
    handle: Callable[[C, Mapping[str, str]], Awaitable[Message]],
) -> Callable[[NatsMessage], Awaitable[NatsResponse]]:
    """Wrap a command handler: decode, delegate, always reply, count. A handler answers a
    ``Reply``, or a reply of its own context (e.g. identity's ``SessionIssued``)."""
    decoder = msgspec.json.Decoder(command_type)
    name = command_type.__name__

    async def endpoint(msg: NatsMessage) -> NatsResponse:
        with request_scope(msg.headers), serving("handle", name, msg.headers):
            # the lines it logs name the gateway's request, and the span
            return traced_reply(await answer(msg))

    async def answer(msg: NatsMessage) -> bytes:
        started = time.perf_counter()
        reply: Message
        try:
            command = decoder.decode(msg.body)
        except msgspec.ValidationError as exc:
            reply = CommandRejected(code=VALIDATION_ERROR, message=str(exc))
        else:
            try:
                reply = await handle(command, msg.headers or {})
            except Exception as exc:
                reply = _failure(name, exc)
        return counted_reply(service, name, started, reply, "accepted")

    endpoint.__name__ = f"handle_{name}"
    return endpoint


def _failure(name: str, exc: Exception) -> CommandRejected:
    """A handler that raised: NATS or JetStream out of reach past the calls' own retries (an
    election that outlasted them) is UNAVAILABLE, which the caller may retry; anything else
    is a bug, INTERNAL."""
    if is_transient(exc):
        log.warning("%s waits for NATS (%r)", name, exc)
        return CommandRejected(code=UNAVAILABLE, message=f"NATS is unreachable now: {exc!r}")
    log.exception("%s failed", name, exc_info=exc)
    return CommandRejected(code=INTERNAL, message=f"{name} failed unexpectedly")


async def check_nats(url: str, timeout: float, **options: Any) -> None:
    """Fail fast, with a message for people, when NATS is not there or refuses ``options``'
    credentials."""
    broker = make_broker(url, name="studio-check", **options)
    try:
        await connect(broker, url, timeout)
    finally:
        await broker.stop()
