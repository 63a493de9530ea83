"""The node's websocket: one socket per server per client, shared by every reader.

``NodeHub`` fetches a token from the panel, connects with the panel's ``Origin``, sends
``auth``, answers ``token expiring`` with a fresh token on the same socket, reconnects (with a
fresh token) after ``token expired``, ``jwt error`` or a drop, with capped backoff and
jitter, and hands typed events to every ``Subscription``. Subscriptions also receive two
signals: ``Connected`` after each successful ``auth`` (a reader that must not miss an event
looks the state up again then) and ``Unavailable`` when events cannot be had (no
``websocket.connect``, a refused upgrade, a socket that keeps failing, a token without
``backup.read`` for readers that need backup events, Pelican's close 4409 while restoring).

The hub's reader runs as one asyncio task owned by the hub: started by the first
subscription, cancelled and awaited when the last one leaves or the client closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
import anyio
from attrs import frozen

from ._errors import ConflictError, EventsUnavailableError, PermissionDeniedError, PteroError
from ._models import (
    BackupCompleted,
    Event,
    NodeEvent,
    RestoreCompleted,
    StatusChanged,
)
from ._panel import PanelAPI
from ._sansio import jwt_claims, may_read_backups, parse_backup_completed, parse_node_frame

__all__ = [
    "MAX_QUEUE",
    "Connected",
    "EventStream",
    "Item",
    "NodeHub",
    "Subscription",
    "Unavailable",
]

logger = logging.getLogger("ptero_backups_async")

#: Events buffered per reader; past it the oldest are dropped (``Subscription.dropped``).
MAX_QUEUE = 1024
#: How long a connection may take from the token request to ``auth success``.
CONNECT_TIMEOUT = 15.0
#: Reconnect backoff: the first pause and the longest.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
#: Connection attempts in a row that never reached ``auth success`` before events are given up.
MAX_FAILURES = 3
#: Frames larger than this are not the node's (Wings caps its own messages far below).
MAX_FRAME = 1024 * 1024
#: aiohttp's ping interval; a node that stops answering is noticed within about twice that.
HEARTBEAT = 30.0
#: How long closing a socket waits for the node's close frame.
CLOSE_TIMEOUT = 1.0
#: Pelican closes a socket with this code while the server is being restored.
CLOSE_RESTORING = 4409

Kind = Literal["events", "backups"]


@frozen
class Connected:
    """The socket is up and authenticated (again): look the state up once more."""

    reconnect: bool


@frozen
class Unavailable:
    """Events cannot be had; ``reason`` says why."""

    reason: str


Item = Event | Connected | Unavailable


class Subscription:
    """One reader of a server's events: a bounded buffer and a wake-up."""

    def __init__(
        self, hub: NodeHub, accept: Callable[[Event], bool] | None, needs_backups: bool
    ) -> None:
        self.hub = hub
        self.accept = accept
        self.needs_backups = needs_backups
        self.dropped = 0
        self._items: collections.deque[Item] = collections.deque()
        self._ready = anyio.Event()

    def push(self, item: Item) -> None:
        """Queue ``item`` (events the reader does not want are not kept)."""
        if isinstance(item, (Connected, Unavailable)):
            self._items.append(item)
        elif self.accept is None or self.accept(item):
            if len(self._items) >= MAX_QUEUE:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
        else:
            return
        self._ready.set()

    async def get(self) -> Item:
        """The next item, waiting for one."""
        while not self._items:
            await self._ready.wait()
            self._ready = anyio.Event()
        return self._items.popleft()

    async def aclose(self) -> None:
        """Leave the hub (the last reader to leave closes the socket)."""
        await self.hub.leave(self)


class NodeHub:
    """The websocket of one server, shared by the client's readers of it."""

    def __init__(
        self,
        api: PanelAPI,
        server: str,
        *,
        session: Callable[[], aiohttp.ClientSession],
        origin: str,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.api = api
        self.connect_timeout = connect_timeout
        self.server = server
        self.origin = origin
        self._session = session
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._backup_events = True
        self._unavailable: str | None = None
        self._socket_url = ""

    @property
    def readers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    async def subscribe(
        self, accept: Callable[[Event], bool] | None = None, *, needs_backups: bool = False
    ) -> Subscription:
        """A new reader; the socket opens with the first one."""
        sub = Subscription(self, accept, needs_backups)
        self._subscribers.add(sub)
        if self._task is None or self._task.done():
            self._unavailable = None
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"ptero-backups node socket {self.server}"
            )
        elif self._unavailable is not None:
            sub.push(Unavailable(self._unavailable))
        elif self._connected:
            if needs_backups and not self._backup_events:
                sub.push(Unavailable(_NO_BACKUP_READ))
            else:
                sub.push(Connected(reconnect=False))
        return sub

    async def leave(self, sub: Subscription) -> None:
        """Drop a reader; the last one closes the socket."""
        self._subscribers.discard(sub)
        if not self._subscribers:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the socket now (every reader then waits for nothing more)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _broadcast(self, item: Item) -> None:
        for sub in list(self._subscribers):
            if isinstance(item, Connected) and sub.needs_backups and not self._backup_events:
                sub.push(Unavailable(_NO_BACKUP_READ))
            else:
                sub.push(item)

    def _give_up(self, reason: str) -> None:
        logger.info("server %s: node events unavailable: %s", self.server, reason)
        self._unavailable = reason
        self._broadcast(Unavailable(reason))

    async def _run(self) -> None:
        failures = 0
        connected_before = False
        while self._subscribers:
            self._connected = False
            try:
                authed = await self._session_once(connected_before)
            except _Permanent as exc:
                self._give_up(str(exc))
                return
            except (
                aiohttp.ClientError,
                TimeoutError,
                asyncio.TimeoutError,
                PteroError,
                _Dropped,
            ) as exc:
                reason = _describe(exc)
                authed = self._connected  # up, then dropped: a reconnect, not a failure
                logger.info("server %s: node socket failed: %s", self.server, reason)
            else:
                reason = "the node closed the socket"
            if authed:
                connected_before = True
                failures = 0
            else:
                failures += 1
                if failures >= MAX_FAILURES:
                    self._give_up(f"{failures} connection attempts failed; the last: {reason}")
                    return
            pause = min(FIRST_BACKOFF * 2 ** max(failures - 1, 0), MAX_BACKOFF)
            await anyio.sleep(pause / 2 + random.random() * pause / 2)

    async def _token(self) -> str:
        try:
            token, socket = await self.api.call(
                "GET",
                f"/servers/{self.server}/websocket",
                self.api.converter.websocket_token,
            )
        except PermissionDeniedError as exc:
            raise _Permanent(f"the key may not open the node's websocket ({exc.status})") from exc
        self._socket_url = socket
        claims = jwt_claims(token)
        self._backup_events = may_read_backups(claims)
        return token

    async def _session_once(self, reconnect: bool) -> bool:
        """One connection, from the token to its end; True if it got ``auth success``."""
        with anyio.fail_after(self.connect_timeout):
            token = await self._token()
            try:
                ws = await self._session().ws_connect(
                    self._socket_url,
                    headers={"Origin": self.origin},
                    heartbeat=HEARTBEAT,
                    max_msg_size=MAX_FRAME,
                    autoping=True,
                    # A node that does not answer a close frame must not hold up a reader
                    # that leaves (or the client closing).
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (400, 401, 403, 404):
                    raise _Permanent(
                        f"the node refused the websocket upgrade ({exc.status}); "
                        "is the panel URL the one the node knows (Origin)?"
                    ) from exc
                raise
        async with ws:
            await ws.send_json({"event": "auth", "args": [token]})
            with anyio.fail_after(self.connect_timeout):
                authed = await self._until_auth(ws)
            if not authed:
                return False
            self._connected = True
            self._broadcast(Connected(reconnect=reconnect))
            await self._read(ws)
            return True

    async def _until_auth(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> bool:
        async for msg in ws:
            frame = self._frame(msg)
            if frame is None:
                continue
            name, _ = frame
            if name == "auth success":
                return True
            if name in ("jwt error", "token expired"):
                return False
        self._closed(ws)
        return False

    async def _read(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        async for msg in ws:
            frame = self._frame(msg)
            if frame is None:
                continue
            name, args = frame
            if name == "token expiring":
                try:
                    token = await self._token()
                except ConflictError:
                    # The panel refuses tokens while the server restores (409); the current
                    # one is still good: keep reading and try again at the next warning.
                    logger.info("server %s: token renewal refused (409); retrying", self.server)
                    continue
                await ws.send_json({"event": "auth", "args": [token]})
            elif name in ("token expired", "jwt error"):
                raise _Dropped(f"the node said {name!r}")
            elif name == "auth success":
                continue
            else:
                event = self._event(name, args)
                if event is not None:
                    self._broadcast(event)
        self._closed(ws)

    def _closed(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        if ws.close_code == CLOSE_RESTORING:
            raise _Permanent("the server is being restored (the node closed the socket, 4409)")
        raise _Dropped(f"the node closed the socket (code {ws.close_code})")

    def _frame(self, msg: Any) -> tuple[str, tuple[str, ...]] | None:  # aiohttp's WSMessage
        if msg.type is aiohttp.WSMsgType.TEXT:
            frame = parse_node_frame(msg.data)
            if frame is None:
                logger.debug("server %s: a node frame that is not an event; ignored", self.server)
            return frame
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise _Dropped(f"the socket failed: {type(msg.data).__name__}")
        return None  # binary frames: not the node's protocol

    def _event(self, name: str, args: tuple[str, ...]) -> Event | None:
        if name == "backup completed":
            payload = parse_backup_completed(args)
            if payload is None:
                logger.debug("server %s: a 'backup completed' without a payload", self.server)
                return NodeEvent(self.server, name, args)
            uuid, ok, checksum, size = payload
            return BackupCompleted(self.server, uuid, ok, checksum, size)
        if name == "backup restore completed":
            return RestoreCompleted(self.server)
        if name == "status" and args:
            return StatusChanged(self.server, args[0])
        return NodeEvent(self.server, name, args)


_NO_BACKUP_READ = "the key's token lacks backup.read: the node would send no backup events"


class _Permanent(Exception):
    """Events cannot be had with this key or this node: do not retry."""


class _Dropped(Exception):
    """The socket ended; a reconnect may help."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "no answer in time"
    return str(exc) or type(exc).__name__


class EventStream:
    """``async for event in stream``: the events of one server, as the node sends them.

    Made by ``client.events(server)``, not directly. Iteration yields ``BackupCompleted``,
    ``RestoreCompleted``, ``StatusChanged`` and ``NodeEvent``, and waits through reconnects;
    events that come while the socket reconnects are not replayed.

    Args:
        sub: This reader's subscription to the server's shared socket.

    Raises:
        EventsUnavailableError: From the iteration, when the node's events cannot be had (and
            no longer will be): no ``websocket.connect`` permission, a refused upgrade, a
            socket that keeps failing.
    """

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    @property
    def dropped(self) -> int:
        """Events dropped because this reader fell more than ``MAX_QUEUE`` (1,024) behind."""
        return self._sub.dropped

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            item = await self._sub.get()
            if isinstance(item, Connected):
                continue
            if isinstance(item, Unavailable):
                raise EventsUnavailableError(f"server {self._sub.hub.server}: {item.reason}")
            return item
