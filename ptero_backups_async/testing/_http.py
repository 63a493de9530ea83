"""aiohttp plumbing shared by the API routes and the link host: recording, dropping, shutdown."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import attrs
from aiohttp import web

from ._models import RecordedRequest
from ._state import PanelState

__all__ = [
    "Handler",
    "Host",
    "Outcome",
    "ShutdownSignal",
    "drop",
    "response",
    "serve_recorded",
]


@attrs.define
class Outcome:
    """What happened to one request, filled in while it is answered; logged at the end."""

    #: Status sent; 0 until a status line went out.
    status: int = 0
    dropped: bool = False
    fault: str | None = None
    backup_uuid: str | None = None
    #: Body bytes handed to the connection.
    sent: int = 0


#: Which of the panel's two origins a request came to.
Host = Literal["api", "link"]

#: A request handler that knows the request's body and fills in its outcome.
Handler = Callable[[web.Request, bytes, Outcome], Awaitable[web.StreamResponse]]


class ShutdownSignal:
    """Set when the FakePanel closes: wakes sleeping handlers and cuts tracked connections."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    def arm(self) -> None:
        """Begin a serving period (FakePanel.start): from now on sleeps last their full time."""
        self._event = asyncio.Event()

    def fire(self) -> None:
        """End the serving period: wake every sleeper and abort every tracked connection."""
        if self._event is not None:
            self._event.set()
        for transport in list(self._transports):
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()

    @property
    def is_set(self) -> bool:
        """True unless the panel is serving (not started yet, or closing)."""
        return self._event is None or self._event.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early when the panel closes; True if it is closing."""
        event = self._event
        if event is None or event.is_set():
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout=max(seconds, 0.0))
        except asyncio.TimeoutError:
            return False
        return True

    def track(self, transport: asyncio.BaseTransport) -> None:
        """Abort this connection when the panel closes (a body may wait on a slow reader)."""
        self._transports.add(transport)

    def untrack(self, transport: asyncio.BaseTransport) -> None:
        """Stop tracking a connection whose answer is done."""
        self._transports.discard(transport)


def response(
    status: int,
    body: bytes | None = None,
    *,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A response with `body`; `content_type` unless `headers` already set one."""
    hdrs = dict(headers or {})
    if content_type is not None and not any(k.lower() == "content-type" for k in hdrs):
        hdrs["Content-Type"] = content_type
    return web.Response(status=status, body=body, headers=hdrs)


def drop(request: web.Request, outcome: Outcome, *, reset: bool) -> None:
    """Close the request's connection without an answer; `reset` sends a TCP RST."""
    transport = request.transport
    outcome.dropped = True
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


def _record(request: web.Request, body: bytes, host: Host) -> RecordedRequest:
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        lower = key.lower()
        headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
    return RecordedRequest(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers=headers,
        body=body,
        host=host,
        status=0,
        backup_uuid=None,
        time=time.monotonic(),
    )


async def serve_recorded(
    state: PanelState,
    request: web.Request,
    host: Host,
    handler: Handler,
    *,
    shutdown: ShutdownSignal | None = None,
) -> web.StreamResponse:
    """Log the request in `state`, answer it with `handler`, then log its outcome.

    With `shutdown`, the connection is tracked while answering, so closing the panel cuts it.
    """
    body = await request.read()
    rec = _record(request, body, host)
    state.log_request(rec)
    outcome = Outcome()
    transport = request.transport if shutdown is not None else None
    if shutdown is not None and transport is not None:
        shutdown.track(transport)
    try:
        resp = await handler(request, body, outcome)
        if not outcome.status and not outcome.dropped:
            outcome.status = resp.status
        return resp
    finally:
        if shutdown is not None and transport is not None:
            shutdown.untrack(transport)
        state.update_request(
            rec,
            attrs.evolve(
                rec,
                status=0 if outcome.dropped and not outcome.status else outcome.status,
                backup_uuid=outcome.backup_uuid,
                fault=outcome.fault,
                bytes_sent=outcome.sent,
            ),
        )
