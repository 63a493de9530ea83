"""The node: Wings' websocket for each server, on a third origin (docs/wire.md, "Events").

`NodeHost.issue_socket` signs the token that the panel's `/websocket` route hands out (the
facade passes it to the routes as a plain callable, so neither part imports the other);
`handle` serves `/api/servers/<uuid>/ws`: the Origin check, `auth` and re-`auth`, token
expiry, and the server's events, which the node learns of from the panel's state
(`PanelState.subscribe`), never from the routes. In the pelican dialect Pelican's rules apply
too: 30 sockets per server, incoming-message limits, 4096-byte messages, and 4409 for a
connection made while the server is being restored. Scripted `SocketFault`s and raw frames
injected by tests come on top.

Frames go out as Wings writes them: compact JSON with a trailing newline, `args` left out when
empty. Each socket has one writer task (frames go out in the order they were produced) and
one expiry checker, in a task group that ends with the socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
import string
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs
from aiohttp import WSMsgType, web
from anyio.abc import TaskGroup

from ._http import ShutdownSignal, response
from ._models import (
    ADMIN_PERMISSIONS,
    BackupFinished,
    FakeServer,
    NodeConnection,
    PowerChanged,
    RestoreFinished,
    SocketFault,
    StateEvent,
)
from ._serialize import node_backup_completed, wings_error_body
from ._state import PanelConfig, PanelState
from ._wire import JwtError, jwt_decode, jwt_encode, reason

__all__ = ["NodeHost"]

_WS_PREFIX = "/api/servers/"
_WS_SUFFIX = "/ws"
_GONE = "The requested resource does not exist on this instance."

#: Pelican: sockets one server may have open at once.
_PELICAN_MAX_SOCKETS = 30
#: Pelican: the largest message a client may send, in bytes (larger: close 1009).
_PELICAN_MAX_MESSAGE = 4096
#: aiohttp's default limit, for Pterodactyl's Wings.
_DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
#: Pelican closes a connection made while the server is being restored with this code.
_CLOSE_RESTORING = 4409
#: Close code when the FakePanel shuts down.
_CLOSE_GOING_AWAY = 1001
#: How long a clean close waits for the client's close frame before cutting the connection.
_CLOSE_WAIT = 1.0
#: How long FakePanel.aclose() lets sockets close cleanly before cutting them.
_SHUTDOWN_WAIT = 0.5
#: The shortest expiry check period, so that a zero interval cannot spin.
_MIN_CHECK = 0.01
#: Backup and restore completions: what `SocketFault.miss_events()` swallows.
_COMPLETIONS = ("backup completed", "backup restore completed")
#: Token seconds the panel backdates `nbf` by (clock skew between panel and node).
_NBF_SKEW = 300
_UNIQUE_ID_CHARS = string.ascii_letters + string.digits


def _origin_of(url: str) -> str:
    """`scheme://host[:port]` of `url`: what a browser sends as Origin for a page there."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _has_permission(permissions: Sequence[str], permission: str) -> bool:
    """Wings' check: the permission itself, or `*` for anything but `admin.*`."""
    return permission in permissions or ("*" in permissions and not permission.startswith("admin"))


def _frame(event: str, args: Sequence[str] = ()) -> dict[str, Any]:
    frame: dict[str, Any] = {"event": event}
    if args:
        frame["args"] = list(args)
    return frame


def _text(frame: dict[str, Any]) -> str:
    # Go's json.Encoder, as gorilla's WriteJSON uses it: compact, one trailing newline.
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False) + "\n"


def _parse(data: str | bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _permissions_of(claims: dict[str, Any]) -> list[str]:
    raw = claims.get("permissions")
    if not isinstance(raw, list):
        return []
    return [p for p in raw if isinstance(p, str)]


@attrs.define
class _Bucket:
    """A token bucket, as golang.org/x/time/rate's Limiter.Allow uses it."""

    per_second: float
    burst: int
    tokens: float
    stamp: float

    def allow(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _limit_for(event: str) -> tuple[str, float, int]:
    """(bucket name, refill per second, burst) of Wings' limiter for an incoming event."""
    if event in ("auth", "send logs"):
        return event, 1 / 5, 2
    if event == "send command":
        return event, 1.0, 10
    return "_default", 1.0, 4


#: What goes down a socket's writer queue: a frame, a raw injected frame, or a close code.
_Out = dict[str, Any] | str | bytes | int


class _Socket:
    """One accepted websocket: its reader (the handler's task), writer and expiry checker."""

    def __init__(
        self,
        *,
        server: FakeServer,
        ws: web.WebSocketResponse,
        record: NodeConnection,
        fault: SocketFault | None,
        config: PanelConfig,
        verify: Callable[[str, FakeServer], dict[str, Any]],
        transport: asyncio.Transport | None,
    ) -> None:
        self.server = server
        self.record = record
        self._ws = ws
        self._fault = fault
        self._config = config
        self._verify = verify
        self._transport = transport
        self._silent = fault is not None and fault.kind == "silent"
        self._miss = fault is not None and fault.kind == "miss_events"
        self._queue: asyncio.Queue[_Out] = asyncio.Queue()
        self._claims: dict[str, Any] | None = None
        self._buckets: dict[str, _Bucket] = {}
        #: Events that got their `throttled` since their last allowed message.
        self._throttled_events: set[str] = set()
        self._closing = False
        self._dropped = False
        self._close_done = asyncio.Event()
        self._tg: TaskGroup | None = None
        #: Set once the socket's tasks are over.
        self.finished = asyncio.Event()

    # Life.

    async def run(self) -> None:
        """Serve the socket until either side closes it."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._write_loop)
            if not self._silent:
                tg.start_soon(self._watch_expiry)
            await self._read_loop()
            if self._closing and not self._dropped:
                # The node is closing: let the writer see the client's close frame (bounded).
                with anyio.move_on_after(_CLOSE_WAIT + 0.5):
                    await self._close_done.wait()
            tg.cancel_scope.cancel()

    def end(self) -> None:
        """Record the end of the socket (the handler calls this once `run` is over)."""
        self.record.closed_at = time.monotonic()
        if self.record.close_code is None and not self._dropped:
            code = self._ws.close_code
            # 1006 is what aiohttp records when no close frame came: the connection was cut.
            self.record.close_code = code if code not in (None, 1006) else None
        self.finished.set()

    def request_close(self, code: int) -> None:
        """Close cleanly with `code` once the frames already queued are out."""
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(code)

    def abort(self) -> None:
        """Cut the TCP connection: no close frame."""
        self._dropped = True
        if self._transport is not None:
            self._transport.abort()

    # Outgoing.

    def send(self, event: str, args: Sequence[str] = ()) -> None:
        """Queue a frame whatever the token (Wings' unsafeSendJson)."""
        if not self._closing:
            self._queue.put_nowait(_frame(event, args))

    def send_raw(self, data: str | bytes) -> None:
        """Queue a frame exactly as given (a str as a text frame, bytes as a binary frame)."""
        if not self._closing:
            self._queue.put_nowait(data)

    def emit(self, event: str, args: Sequence[str] = ()) -> None:
        """Send a server event as Wings' SendJson does.

        Nothing before the first `auth success` (and nothing at all from a silent socket); a
        `jwt error` instead once the token is no longer valid; backup events only to tokens
        with `backup.read` (or `*`).
        """
        if self._silent or self._claims is None:
            return
        problem = self._token_problem()
        if problem is not None:
            self.send("jwt error", [problem])
            return
        if event.startswith("backup completed") and not _has_permission(
            _permissions_of(self._claims), "backup.read"
        ):
            return
        if self._miss and event in _COMPLETIONS:
            return
        self.send(event, args)

    async def _write_loop(self) -> None:
        ws = self._ws
        while True:
            item = await self._queue.get()
            if isinstance(item, int):
                self.record.close_code = item
                try:
                    await ws.close(code=item)
                finally:
                    self._close_done.set()
                return
            if ws.closed:
                continue
            try:
                if isinstance(item, dict):
                    await ws.send_str(_text(item))
                    self.record.sent.append(item)
                    continue
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)
            except ConnectionError:
                return
            parsed = _parse(item)
            if parsed is not None:
                self.record.sent.append(parsed)

    async def _watch_expiry(self) -> None:
        """Wings' expiry ticker: `token expiring`, then `token expired`, at each check."""
        while True:
            await anyio.sleep(max(self._config.ws_check_interval, _MIN_CHECK))
            claims = self._claims
            if claims is None:
                continue
            exp = claims.get("exp")
            remaining = exp - time.time() if isinstance(exp, (int, float)) else 0.0
            if remaining <= 0:
                self.send("token expired")
            elif remaining <= min(60.0, self._config.ws_token_lifetime / 2):
                self.emit("token expiring")

    async def _fault_timer(self, fault: SocketFault) -> None:
        await anyio.sleep(fault.seconds)
        if fault.kind == "drop":
            self.abort()
        else:
            self.request_close(fault.code)

    # Incoming.

    async def _read_loop(self) -> None:
        async for msg in self._ws:
            if msg.type is WSMsgType.ERROR:
                # e.g. a message over the size limit: aiohttp has closed with 1009 already.
                return
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                frame = _parse(msg.data)
                if frame is None:
                    continue  # Wings drops what is not JSON, and keeps the socket
                self.record.received.append(frame)
                if not self._silent and not self._closing:
                    self._on_frame(frame)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        args = frame.get("args", [])
        if args is None:
            args = []
        # Go's json.Unmarshal into {Event string; Args []string}: anything else is dropped.
        if not isinstance(event, str) or not (
            isinstance(args, list) and all(isinstance(a, str) for a in args)
        ):
            return
        if self._config.dialect == "pelican" and self._throttled(event):
            return
        if event == "auth":
            self._auth("".join(args))
            return
        problem = self._token_problem()
        if problem is not None:
            self.send("jwt error", [problem])
            return
        if event == "send stats":
            self.emit("stats", [self._stats()])
        elif event == "set state":
            self._set_state("".join(args))

    def _throttled(self, event: str) -> bool:
        """Pelican's limiter: True (and one `throttled` per throttling spell) when over."""
        name, per_second, burst = _limit_for(event)
        now = time.monotonic()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(per_second, burst, float(burst), now)
        if bucket.allow(now):
            self._throttled_events.discard(event)
            return False
        if event not in self._throttled_events:
            self._throttled_events.add(event)
            self.send("throttled", [event])
        return True

    def _auth(self, token: str) -> None:
        try:
            claims = self._verify(token, self.server)
        except JwtError as exc:
            self.send("jwt error", [str(exc)])
            return
        first = self._claims is None
        self._claims = claims
        self.record.auth_count += 1
        self.send("auth success")
        if not first:
            return  # a token swap: no second status (Wings avoids duplicates)
        self.emit("status", [self.server.power_state])
        fault = self._fault
        if fault is not None and fault.kind in ("drop", "close") and self._tg is not None:
            self._tg.start_soon(self._fault_timer, fault)

    def _token_problem(self) -> str | None:
        """Why the socket's token is not valid now (Wings' TokenValid), or None."""
        claims = self._claims
        if claims is None:
            return "jwt: no jwt present"
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or time.time() > exp:
            return "jwt: exp claim is invalid"
        return None

    def _stats(self) -> str:
        state = self.server.power_state
        return json.dumps(
            {
                "memory_bytes": 0,
                "memory_limit_bytes": 0,
                "cpu_absolute": 0,
                "network": {"rx_bytes": 0, "tx_bytes": 0},
                "uptime": 0,
                "state": state,
                "disk_bytes": 0,
            },
            separators=(",", ":"),
        )

    def _set_state(self, action: str) -> None:
        needed = {
            "start": "control.start",
            "stop": "control.stop",
            "restart": "control.restart",
            "kill": "control.stop",
        }.get(action)
        claims = self._claims
        if needed is None or claims is None or not _has_permission(_permissions_of(claims), needed):
            return
        if action in ("stop", "kill", "restart"):
            self.server.power_state = "offline"
        if action in ("start", "restart"):
            self.server.power_state = "running"


class NodeHost:
    """A FakePanel's node: `issue_socket` signs websocket tokens, `handle` serves the sockets."""

    def __init__(self, state: PanelState, shutdown: ShutdownSignal) -> None:
        self._state = state
        self._config = state.config
        self._shutdown = shutdown
        self._secret = secrets.token_bytes(32)
        self._origin: str | None = None
        self._panel_url: str | None = None
        self._panel_origin: str | None = None
        self._serving = False
        self._records: list[NodeConnection] = []
        self._sockets: list[_Socket] = []
        state.subscribe(self._on_state_event)

    def bind(self, origin: str, panel_url: str) -> None:
        """Serve at `origin`, for the panel at `panel_url` (its origin is the allowed Origin)."""
        self._origin = origin
        self._panel_url = panel_url
        self._panel_origin = _origin_of(panel_url)
        self._serving = True

    @property
    def _base(self) -> str:
        if self._origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._origin

    # Tokens.

    def issue_socket(self, server: FakeServer, key: str) -> tuple[str, str]:
        """(token, socket URL) for the user of `key` on `server`, as the panel signs them.

        Claims as Pterodactyl's NodeJWTService writes them (whole seconds; `exp` rounded up so
        the token lives at least `ws_token_lifetime`); Pelican adds `scope: "websocket"`.
        """
        now = time.time()
        user_uuid = self._state.user_uuid(key)
        jti = hashlib.md5(f"{user_uuid}{server.uuid}".encode(), usedforsecurity=False).hexdigest()
        if server.owner_is_admin:
            permissions = ["*", *ADMIN_PERMISSIONS]
        else:
            permissions = list(server.permissions)
        iat = int(now)
        claims: dict[str, Any] = {
            "iss": self._panel_url,
            "aud": [self._base],
            "jti": jti,
            "iat": iat,
            "nbf": iat - _NBF_SKEW,
            "exp": math.ceil(now + self._config.ws_token_lifetime),
            "server_uuid": server.uuid,
            "permissions": permissions,
            "user_uuid": user_uuid,
            "unique_id": "".join(secrets.choice(_UNIQUE_ID_CHARS) for _ in range(16)),
        }
        if self._config.dialect == "pelican":
            claims["scope"] = "websocket"
        token = jwt_encode(claims, self._secret, headers={"jti": jti})
        socket = "ws" + self._base.removeprefix("http") + f"{_WS_PREFIX}{server.uuid}{_WS_SUFFIX}"
        return token, socket

    def verify(self, token: str, server: FakeServer) -> dict[str, Any]:
        """The claims of a token for `server` that the node accepts now; JwtError otherwise."""
        claims = jwt_decode(token, self._secret)
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, (int, float)) or now > exp:
            raise JwtError("jwt: exp claim is invalid")
        if isinstance(nbf, (int, float)) and now < nbf:
            raise JwtError("jwt: nbf claim is invalid")
        if not _has_permission(_permissions_of(claims), "websocket.connect"):
            raise JwtError("jwt: missing connect permission")
        if claims.get("server_uuid") != server.uuid:
            raise JwtError("jwt: server uuid mismatch")
        return claims

    # Sockets.

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler of the node's origin."""
        path = request.path
        server = None
        if path.startswith(_WS_PREFIX) and path.endswith(_WS_SUFFIX):
            wanted = path[len(_WS_PREFIX) : -len(_WS_SUFFIX)]
            server = next((s for s in self._state.servers if s.uuid == wanted), None)
        if server is None:
            return response(404, wings_error_body(_GONE), content_type="application/json")
        record = NodeConnection(
            server_uuid=server.uuid,
            origin=request.headers.get("Origin"),
            opened_at=time.monotonic(),
        )
        self._records.append(record)
        fault = self._state.next_socket_fault(server)
        if fault is not None:
            record.fault = fault.kind
        pelican = self._config.dialect == "pelican"
        ws = web.WebSocketResponse(
            timeout=_CLOSE_WAIT,
            max_msg_size=_PELICAN_MAX_MESSAGE if pelican else _DEFAULT_MAX_MESSAGE,
        )
        refused = self._refusal(request, ws, server, fault)
        if refused is not None:
            record.status = refused.status
            record.closed_at = time.monotonic()
            return refused
        await ws.prepare(request)
        transport = request.transport
        sock = _Socket(
            server=server,
            ws=ws,
            record=record,
            fault=fault,
            config=self._config,
            verify=self.verify,
            transport=transport if isinstance(transport, asyncio.Transport) else None,
        )
        self._sockets.append(sock)
        if transport is not None:
            self._shutdown.track(transport)
        try:
            if pelican and server.status == "restoring_backup":
                sock.request_close(_CLOSE_RESTORING)
            await sock.run()
        finally:
            self._sockets.remove(sock)
            if transport is not None:
                self._shutdown.untrack(transport)
            sock.end()
        return ws

    def _refusal(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        server: FakeServer,
        fault: SocketFault | None,
    ) -> web.Response | None:
        """The plain HTTP answer that refuses this upgrade, or None to accept it."""
        if not self._serving:
            return _plain(503)
        if fault is not None and fault.kind == "refuse":
            return _plain(fault.status)
        if request.method != "GET":
            return _plain(405)
        if not ws.can_prepare(request).ok:
            return _plain(400)
        if request.headers.get("Origin") != self._panel_origin:
            # gorilla's Upgrader.CheckOrigin failing: 403 before any upgrade.
            return _plain(403, headers={"Sec-Websocket-Version": "13"})
        if self._config.dialect == "pelican":
            open_now = sum(1 for s in self._sockets if s.server is server)
            if open_now >= _PELICAN_MAX_SOCKETS:
                return response(
                    400,
                    wings_error_body("Too many open websocket connections for this server."),
                    content_type="application/json",
                )
        return None

    def send_frame(self, server: FakeServer, data: str | bytes) -> int:
        """Queue `data` as is on every open socket of `server`; how many sockets got it."""
        sockets = [s for s in self._sockets if s.server is server]
        for sock in sockets:
            sock.send_raw(data)
        return len(sockets)

    def connections(self, server: FakeServer | None = None) -> list[NodeConnection]:
        """Every upgrade request so far (refused ones too), of `server` or of all servers."""
        if server is None:
            return list(self._records)
        return [r for r in self._records if r.server_uuid == server.uuid]

    async def close(self) -> None:
        """Close every socket (1001), cutting those that do not answer in time; refuse new ones."""
        self._serving = False
        sockets = list(self._sockets)
        for sock in sockets:
            sock.request_close(_CLOSE_GOING_AWAY)
        with anyio.move_on_after(_SHUTDOWN_WAIT):
            for sock in sockets:
                await sock.finished.wait()
        for sock in sockets:
            if not sock.finished.is_set():
                sock.abort()

    # What the state tells the node.

    def _on_state_event(self, event: StateEvent) -> None:
        sockets = [s for s in self._sockets if s.server is event.server]
        if not sockets:
            return
        if isinstance(event, BackupFinished):
            if event.backup.deleted:
                return  # the panel refuses Wings' report of a deleted backup: no event
            payload = node_backup_completed(event.backup)
            for sock in sockets:
                sock.emit("backup completed", [payload])
        elif isinstance(event, RestoreFinished):
            for sock in sockets:
                sock.emit("daemon message", ["Completed server restoration from local backup."])
                sock.emit("backup restore completed", [""])
        elif isinstance(event, PowerChanged):
            for sock in sockets:
                sock.emit("status", [event.state])


def _plain(status: int, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text refusal as Go's http.Error writes it."""
    return response(
        status,
        (reason(status) + "\n").encode(),
        content_type="text/plain; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", **(headers or {})},
    )
