"""FakePanel: a loopback HTTP server that speaks the panel's backup API as docs/wire.md says.

The facade: it owns the three aiohttp servers (panel, link host, node), wires the parts
together (state, API routes, link host, node) and keeps the public API of
`ptero_backups_async.testing`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from ._http import ShutdownSignal
from ._linkhost import LinkHost
from ._models import (
    UNSET,
    BackupState,
    Dialect,
    DownloadFault,
    FakeBackup,
    FakeServer,
    Fault,
    FaultKind,
    NodeConnection,
    RecordedRequest,
    SocketFault,
    Storage,
    Unset,
)
from ._node import NodeHost
from ._routes import ApiRoutes
from ._state import PanelConfig, PanelState

__all__ = ["FakePanel"]

_DEFAULT_RATE_LIMITS: dict[str, int] = {"pterodactyl": 720, "pelican": 256, "reference": 720}
_FAULT_KINDS = ("status", "reset", "stall", "html", "redirect", "empty", "json")


class FakePanel:
    """A fake Pterodactyl/Pelican panel plus download-link host, on loopback, for tests.

    Servers and backups are plain objects (`FakeServer`, `FakeBackup`) that tests may read and
    change at any time. The panel API lives at `url` (`{path_prefix}/api/client`); download
    links point at `link_url`, a second origin. Every request to these two is appended to
    `requests`. The node's websocket (`GET /servers/{server}/websocket` hands out its token
    and URL) lives at `node_url`, a third origin; its connections are listed by
    `node_connections()`. The settings given to the constructor are attributes of the same
    names; a change applies from the next request on.

    Use it as `async with FakePanel() as panel:`, or call `start()` and `aclose()`.

    Args:
        dialect: The wire format: `"pterodactyl"`, `"pelican"` or `"reference"` (the widely
            copied reference page's field names and status codes).
        storage: The link host's style: `"wings"` (single-use links, no `Range`) or `"s3"`
            (presigned links that honour `Range` and `If-Range`).
        api_key: The client API key that sees every server without an `owner_key`; None
            makes a random one (`ptlc_…`, or `pacc_…` for Pelican).
        path_prefix: The path the panel lives under (`""` or `"/prefix"`).
        rate_limit: API requests allowed per key per `rate_limit_period`; None: the
            dialect's (720 a minute, 256 for Pelican).
        rate_limit_period: Length of a rate-limit window, in seconds.
        create_throttle: (backups, seconds) a server may create through the API before a 429
            with `Retry-After`; None: unthrottled.
        restore_throttle: (restores, seconds) a server may start before a 429; by default
            `(3, 900)` for Pelican and unthrottled otherwise; None: unthrottled.
        backup_duration: Seconds a backup created through the API takes to finish.
        restore_duration: Seconds a restore keeps the server in `"restoring_backup"`.
        link_ttl: Lifetime of a download link, in seconds; None: 900 for Wings, 300 for S3.
        ws_token_lifetime: Lifetime of a websocket token, in seconds.
        ws_check_interval: How often the node checks each socket's token for expiry, in
            seconds.

    Raises:
        ValueError: An unknown `dialect` or `storage`.
    """

    def __init__(
        self,
        *,
        dialect: Dialect = "pterodactyl",
        storage: Storage = "wings",
        api_key: str | None = None,
        path_prefix: str = "",
        rate_limit: int | None = None,
        rate_limit_period: float = 60.0,
        create_throttle: tuple[int, float] | None = (2, 600.0),
        restore_throttle: tuple[int, float] | Unset | None = UNSET,
        backup_duration: float = 0.0,
        restore_duration: float = 0.5,
        link_ttl: float | None = None,
        ws_token_lifetime: float = 600.0,
        ws_check_interval: float = 30.0,
    ) -> None:
        if dialect not in ("pterodactyl", "pelican", "reference"):
            raise ValueError(f"unknown dialect {dialect!r}")
        if storage not in ("wings", "s3"):
            raise ValueError(f"unknown storage {storage!r}")
        if api_key is None:
            api_key = ("pacc_" if dialect == "pelican" else "ptlc_") + secrets.token_urlsafe(32)
        prefix = path_prefix.strip().rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        if isinstance(restore_throttle, Unset):
            restore_throttle = (3, 900.0) if dialect == "pelican" else None
        if link_ttl is None:
            link_ttl = 900.0 if storage == "wings" else 300.0
        self._config = PanelConfig(
            dialect=dialect,
            storage=storage,
            api_key=api_key,
            path_prefix=prefix,
            rate_limit=rate_limit if rate_limit is not None else _DEFAULT_RATE_LIMITS[dialect],
            rate_limit_period=rate_limit_period,
            create_throttle=create_throttle,
            restore_throttle=restore_throttle,
            backup_duration=backup_duration,
            restore_duration=restore_duration,
            link_ttl=link_ttl,
            ws_token_lifetime=ws_token_lifetime,
            ws_check_interval=ws_check_interval,
        )
        self._state = PanelState(self._config)
        self._shutdown = ShutdownSignal()
        self._link_host = LinkHost(self._state, self._shutdown)
        self._node = NodeHost(self._state, self._shutdown)
        self._routes = ApiRoutes(
            self._state,
            self._shutdown,
            self._link_host.issue_link,
            issue_socket=self._node.issue_socket,
        )
        self._runners: list[web.AppRunner] = []
        self._api_origin: str | None = None
        self._link_origin: str | None = None
        self._node_origin: str | None = None

    # Settings: stored in the config that every part reads.

    @property
    def dialect(self) -> Dialect:
        """Wire dialect: "pterodactyl", "pelican" or "reference"."""
        return self._config.dialect

    @dialect.setter
    def dialect(self, value: Dialect) -> None:
        self._config.dialect = value

    @property
    def storage(self) -> Storage:
        """Link style: "wings" (single-use, no Range) or "s3" (presigned, Range)."""
        return self._config.storage

    @storage.setter
    def storage(self, value: Storage) -> None:
        self._config.storage = value

    @property
    def api_key(self) -> str:
        """The client API key that sees every server without an `owner_key`."""
        return self._config.api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        self._config.api_key = value

    @property
    def path_prefix(self) -> str:
        """The path the panel lives under ("" or "/prefix")."""
        return self._config.path_prefix

    @path_prefix.setter
    def path_prefix(self, value: str) -> None:
        self._config.path_prefix = value

    @property
    def rate_limit(self) -> int:
        """API requests allowed per key (or client IP) per `rate_limit_period`."""
        return self._config.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: int) -> None:
        self._config.rate_limit = value

    @property
    def rate_limit_period(self) -> float:
        """Length of a rate-limit window, in seconds."""
        return self._config.rate_limit_period

    @rate_limit_period.setter
    def rate_limit_period(self, value: float) -> None:
        self._config.rate_limit_period = value

    @property
    def create_throttle(self) -> tuple[int, float] | None:
        """(backups, seconds) a server may create through the API; None: unthrottled."""
        return self._config.create_throttle

    @create_throttle.setter
    def create_throttle(self, value: tuple[int, float] | None) -> None:
        self._config.create_throttle = value

    @property
    def restore_throttle(self) -> tuple[int, float] | None:
        """(restores, seconds) a server may start; None: unthrottled."""
        return self._config.restore_throttle

    @restore_throttle.setter
    def restore_throttle(self, value: tuple[int, float] | None) -> None:
        self._config.restore_throttle = value

    @property
    def backup_duration(self) -> float:
        """Seconds a backup created through the API takes to finish."""
        return self._config.backup_duration

    @backup_duration.setter
    def backup_duration(self, value: float) -> None:
        self._config.backup_duration = value

    @property
    def restore_duration(self) -> float:
        """Seconds a restore keeps the server in "restoring_backup"."""
        return self._config.restore_duration

    @restore_duration.setter
    def restore_duration(self, value: float) -> None:
        self._config.restore_duration = value

    @property
    def link_ttl(self) -> float:
        """Lifetime of a download link, in seconds."""
        return self._config.link_ttl

    @link_ttl.setter
    def link_ttl(self, value: float) -> None:
        self._config.link_ttl = value

    @property
    def ws_token_lifetime(self) -> float:
        """Lifetime of a websocket token, in seconds (the panel's is 600).

        `exp` is whole seconds, rounded up: a token lives at least this long. The node says
        `token expiring` when at most min(60, ws_token_lifetime / 2) seconds remain.
        """
        return self._config.ws_token_lifetime

    @ws_token_lifetime.setter
    def ws_token_lifetime(self, value: float) -> None:
        self._config.ws_token_lifetime = value

    @property
    def ws_check_interval(self) -> float:
        """How often the node checks each socket's token for expiry, in seconds (Wings: 30)."""
        return self._config.ws_check_interval

    @ws_check_interval.setter
    def ws_check_interval(self, value: float) -> None:
        self._config.ws_check_interval = value

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, API and link host, in arrival order."""
        return self._state.requests

    @requests.setter
    def requests(self, value: list[RecordedRequest]) -> None:
        self._state.requests = value

    # Lifecycle.

    @property
    def url(self) -> str:
        """Panel base URL, path prefix included (what an SDK is given); valid after start().

        Raises:
            RuntimeError: The panel is not started.
        """
        if self._api_origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._api_origin + self.path_prefix

    @property
    def link_url(self) -> str:
        """Base URL of the download-link host (a different origin); valid after start().

        Raises:
            RuntimeError: The panel is not started.
        """
        if self._link_origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._link_origin

    @property
    def node_url(self) -> str:
        """Base URL of the node (Wings), whose websockets the token route points at.

        Raises:
            RuntimeError: The panel is not started.
        """
        if self._node_origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._node_origin

    async def start(self) -> None:
        """Bind the panel, the link host and the node on 127.0.0.1, each on a free port.

        Raises:
            RuntimeError: The panel is already started.
            OSError: A port could not be bound (whatever was started is stopped again).
        """
        if self._runners:
            raise RuntimeError("FakePanel is already started")
        self._shutdown.arm()
        try:
            self._api_origin = await self._serve(self._routes.handle)
            self._routes.bind(self._api_origin)
            self._link_origin = await self._serve(self._link_host.handle)
            self._link_host.bind(self._link_origin)
            self._node_origin = await self._serve(self._node.handle)
            self._node.bind(self._node_origin, panel_url=self.url)
        except BaseException:
            await self.aclose()
            raise

    async def _serve(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        """Stop every host; websockets get a close (1001), stalled responses are cut short.

        Idempotent.
        """
        await self._node.close()
        self._shutdown.fire()
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> FakePanel:
        """Start the panel."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the panel."""
        await self.aclose()

    # Servers and backups.

    def add_server(
        self,
        *,
        name: str = "server",
        backup_limit: int = 10,
        identifier: str | None = None,
        uuid: str | None = None,
        owner_key: str | None = None,
        fail_backups: bool = False,
        permissions: Sequence[str] = ("*",),
        owner_is_admin: bool = False,
    ) -> FakeServer:
        """Add a server; owner_key (default: the panel's key) is the only key that sees it.

        `permissions` and `owner_is_admin` describe that key's user on the server (see
        `FakeServer`): the websocket token carries them.

        Args:
            name: The server's name.
            backup_limit: How many backups the server may hold (0: backups are off).
            identifier: The 8-character short id; None: the first 8 characters of the UUID.
            uuid: The server's UUID; None: a random one (starting with `identifier` when
                that is given).
            owner_key: The only API key that sees the server; None: the panel's `api_key`.
            fail_backups: Every backup created through the API on this server fails.
            permissions: The key's user's permissions on the server (`["*"]`: the owner).
            owner_is_admin: The key's user is a root admin.

        Returns:
            The new server, which tests may read and change at any time.

        Raises:
            ValueError: Another server has that short id or UUID.
        """
        return self._state.add_server(
            name=name,
            backup_limit=backup_limit,
            identifier=identifier,
            uuid=uuid,
            owner_key=owner_key,
            fail_backups=fail_backups,
            permissions=permissions,
            owner_is_admin=owner_is_admin,
        )

    def add_backup(
        self,
        server: FakeServer | str,
        *,
        content: bytes | None = None,
        name: str = "backup",
        locked: bool = False,
        state: BackupState = "completed",
        checksum_algorithm: Literal["sha1", "sha256"] = "sha1",
        checksum: str | Unset | None = UNSET,
        created_at: datetime | None = None,
        uuid: str | None = None,
        ignored_files: list[str] | None = None,
        is_scheduled: bool = False,
    ) -> FakeBackup:
        """Add a backup (content default: a small deterministic .tar.gz seeded by the uuid).

        Args:
            server: The server, or its short id or UUID.
            content: The archive's bytes; None: a small deterministic `.tar.gz`.
            name: The backup's name.
            locked: Whether it is locked against deletion.
            state: `"completed"`, `"failed"`, or `"creating"` (until `FakeBackup.complete()`
                or `fail()` is called).
            checksum_algorithm: The algorithm of the announced checksum, `"sha1"` or
                `"sha256"` (the reference dialect always announces bare SHA-256).
            checksum: The hash field exactly as the panel should send it (None: `null`);
                left out, it is computed from `content`.
            created_at: When it was created (naive times are taken as UTC); None: now.
            uuid: The backup's UUID; None: a random one.
            ignored_files: The patterns it reports as left out.
            is_scheduled: Whether a schedule made it (sent by the Pelican dialect only).

        Returns:
            The new backup, which tests may read and change at any time.

        Raises:
            KeyError: No server has that short id or UUID.
            ValueError: Another backup has that UUID, or `state` is unknown.
        """
        return self._state.add_backup(
            self._state.resolve_server(server),
            content=content,
            name=name,
            locked=locked,
            state=state,
            checksum_algorithm=checksum_algorithm,
            checksum=checksum,
            created_at=created_at,
            uuid=uuid,
            ignored_files=ignored_files,
            is_scheduled=is_scheduled,
        )

    def server(self, id_or_uuid: str) -> FakeServer:
        """The server with this short id or UUID (KeyError if none).

        Args:
            id_or_uuid: The server's short id or UUID.

        Returns:
            The server.

        Raises:
            KeyError: No server has that short id or UUID.
        """
        return self._state.server(id_or_uuid)

    @property
    def servers(self) -> list[FakeServer]:
        """All servers, in the order they were added."""
        return self._state.servers

    def backup(self, uuid: str) -> FakeBackup:
        """The backup with this UUID, deleted ones included (KeyError if none).

        Args:
            uuid: The backup's UUID.

        Returns:
            The backup.

        Raises:
            KeyError: No backup has that UUID.
        """
        return self._state.backup(uuid)

    def fail_next_backup(self, server: FakeServer | str, times: int = 1) -> None:
        """Make the next `times` backups created through the API end as failed.

        Args:
            server: The server, or its short id or UUID.
            times: How many of the next backups fail.

        Raises:
            KeyError: No server has that short id or UUID.
        """
        self._state.fail_next_backup(self._state.resolve_server(server), times)

    def start_restore(self, server: FakeServer | str, duration: float | None = None) -> None:
        """Put the server in "restoring_backup" for `duration` seconds (None: until finished).

        Args:
            server: The server, or its short id or UUID.
            duration: Seconds until the restore ends by itself; None: until
                `finish_restore()`.

        Raises:
            KeyError: No server has that short id or UUID.
        """
        self._state.resolve_server(server).set_status("restoring_backup", duration)

    def finish_restore(self, server: FakeServer | str) -> None:
        """End a running restore now (the node reports `backup restore completed`).

        Args:
            server: The server, or its short id or UUID.

        Raises:
            KeyError: No server has that short id or UUID.
        """
        self._state.resolve_server(server).set_status(None)

    # Faults and logs.

    def inject(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int = 503,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        kind: FaultKind = "status",
        json_body: Any = None,
        delay: float = 0.0,
    ) -> Fault:
        """Script an API fault, applied before routing, auth and rate limits; first match wins.

        Kinds: "status" (a JSON error body; a given `body` goes out as text/plain), "json"
        (`json_body`, or a raw `body`, as application/json),
        "html", "empty", "redirect" (302 to /auth/login unless a 3xx `status`), "reset"
        (connection reset, no answer), "stall" (silence for `delay` seconds, default an hour,
        then normal handling). For the other kinds `delay` waits before answering. `path` is a
        regex searched in the request path without the prefix.

        Args:
            method: The HTTP method it applies to; None: any.
            path: A regex searched in the request path (without the path prefix); None: any.
            status: The status answered (for `"status"`, `"json"`, `"html"`, `"empty"`, and a
                3xx for `"redirect"`).
            times: How many matching requests it hits.
            headers: Extra headers of the answer (`Retry-After`…).
            body: A raw body to send instead of the kind's own.
            kind: What goes wrong: `"status"`, `"json"`, `"html"`, `"empty"`, `"redirect"`,
                `"reset"` or `"stall"`.
            json_body: The JSON document of a `"json"` fault.
            delay: Seconds to wait before answering (for `"stall"`: the silence; 0 means an
                hour).

        Returns:
            The fault, whose `used` and `remaining` tell how often it hit; `cancel()` stops it.

        Raises:
            ValueError: An unknown `kind`.
        """
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(
            kind=kind,
            status=status,
            method=method,
            path=path,
            times=times,
            headers=dict(headers or {}),
            body=body.encode() if isinstance(body, str) else body,
            json_body=json_body,
            delay=delay,
        )
        self._state.add_fault(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every scripted API fault, download script and socket script."""
        self._state.clear_faults()

    def script_download(self, backup: FakeBackup | str, *faults: DownloadFault | None) -> None:
        """Script the next GETs of this backup's links: the n-th gets faults[n] (None: normal).

        Replaces any earlier script for the backup; once it is used up, links behave normally.

        Args:
            backup: The backup, or its UUID.
            *faults: One entry per GET, in order: a `DownloadFault`, or None for a normal one.

        Raises:
            KeyError: No backup has that UUID.
        """
        self._state.script_download(self._state.resolve_backup(backup), faults)

    def script_socket(self, server: FakeServer | str, *faults: SocketFault | None) -> None:
        """Script the next websocket upgrade requests of this server: the n-th gets faults[n].

        None: a normal connection. Replaces any earlier script for the server; once it is used
        up, connections behave normally.

        Args:
            server: The server, or its short id or UUID.
            *faults: One entry per upgrade request, in order: a `SocketFault`, or None for
                a normal connection.

        Raises:
            KeyError: No server has that short id or UUID.
        """
        self._state.script_socket(self._state.resolve_server(server), faults)

    def send_node_frame(self, server: FakeServer | str, frame: str | bytes) -> int:
        """Send `frame` as is on every open socket of the server, authenticated or not.

        A str goes out as a text frame, bytes as a binary frame (not JSON, unknown events,
        huge frames: whatever a test needs).

        Args:
            server: The server, or its short id or UUID.
            frame: The frame's text, or bytes for a binary frame.

        Returns:
            The number of sockets it went to.

        Raises:
            KeyError: No server has that short id or UUID.
        """
        return self._node.send_frame(self._state.resolve_server(server), frame)

    def node_connections(self, server: FakeServer | str | None = None) -> list[NodeConnection]:
        """Websocket upgrade requests to the node (refused ones too), oldest first.

        Args:
            server: Only this server's (the server, or its short id or UUID); None: every
                server's.

        Returns:
            The connections, each with what went over it.

        Raises:
            KeyError: No server has that short id or UUID.
        """
        return self._node.connections(
            None if server is None else self._state.resolve_server(server)
        )

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        self.requests.clear()

    def api_requests(self) -> list[RecordedRequest]:
        """Recorded requests to the panel."""
        return [r for r in self.requests if r.host == "api"]

    def link_requests(self) -> list[RecordedRequest]:
        """Recorded requests to the link host."""
        return [r for r in self.requests if r.host == "link"]
