"""State objects of the fake panel: servers, backups, recorded requests and faults."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import attrs

__all__ = [
    "ADMIN_PERMISSIONS",
    "UNSET",
    "BackupFinished",
    "BackupState",
    "Dialect",
    "DownloadFault",
    "DownloadFaultKind",
    "FakeBackup",
    "FakeServer",
    "Fault",
    "FaultKind",
    "NodeConnection",
    "PowerChanged",
    "RecordedRequest",
    "RestoreFinished",
    "SocketFault",
    "SocketFaultKind",
    "StateEvent",
    "Storage",
    "Unset",
]

Dialect = Literal["pterodactyl", "pelican", "reference"]
Storage = Literal["wings", "s3"]
BackupState = Literal["creating", "completed", "failed"]
FaultKind = Literal["status", "reset", "stall", "html", "redirect", "empty", "json"]
DownloadFaultKind = Literal[
    "drop",
    "corrupt",
    "stall",
    "status",
    "expired",
    "ignore_range",
    "wrong_range",
    "change_etag",
    "gzip",
    "short",
    "endless",
    "trickle",
]
SocketFaultKind = Literal["refuse", "drop", "close", "silent", "miss_events"]

#: What the panel adds to a root admin's websocket token, after "*".
ADMIN_PERMISSIONS = (
    "admin.websocket.errors",
    "admin.websocket.install",
    "admin.websocket.transfer",
)


class Unset(enum.Enum):
    """Marker type for "argument not given"."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


def _call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """A timer on the running loop; None outside one (the change then happens on access only)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(max(delay, 0.0), callback)


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


@attrs.define(eq=False)
class FakeServer:
    """A server of a FakePanel; `backups` lists live backups, `all_backups` deleted ones too.

    `permissions` is what the key's user may do on the server, as the panel puts it in the
    websocket token: `["*"]` for the owner (the default), or a subuser's list such as
    `["websocket.connect", "backup.read"]`. Without `websocket.connect` (or `*`) the token route
    answers 403. `owner_is_admin` makes the key's user a root admin: the token then carries `*`
    and the admin websocket permissions, and the token route keeps answering while the server
    is being restored (other keys get 409, as on every other server route). `power_state` is
    what the node reports in `status` events ("running", "offline", "starting", "stopping").

    Made by `FakePanel.add_server()`.

    Attributes:
        identifier: The 8-character short id.
        uuid: The server's UUID.
        name: The server's name.
        backup_limit: How many backups the server may hold (0: backups are off).
        owner_key: The only API key that sees the server; None: the panel's key.
        fail_backups: Every backup created through the API on this server fails.
        restores: Every successful restore request, in order: (backup uuid, truncate).
        permissions: The user's permissions on this server, as the websocket token carries
            them.
        owner_is_admin: Whether the key's user is a root admin.
        listener (Callable[[StateEvent], None] | None): Called with every state change of
            this server (the panel's state sets it).
        power_state (str): The process state the node reports (see the property).
    """

    identifier: str
    uuid: str
    name: str
    backup_limit: int
    owner_key: str | None
    fail_backups: bool = False
    restores: list[tuple[str, bool]] = attrs.field(factory=list)
    permissions: list[str] = attrs.field(factory=lambda: ["*"])
    owner_is_admin: bool = False
    #: Called with every StateEvent of this server; the panel's state sets it.
    _listener: Callable[[StateEvent], None] | None = attrs.field(
        default=None, repr=False, alias="listener"
    )
    _power_state: str = attrs.field(default="running", alias="power_state")
    _all_backups: list[FakeBackup] = attrs.field(factory=list, init=False, repr=False)
    _status: str | None = attrs.field(default=None, init=False)
    _status_until: float | None = attrs.field(default=None, init=False, repr=False)
    _status_timer: asyncio.TimerHandle | None = attrs.field(default=None, init=False, repr=False)

    def notify(self, event: StateEvent) -> None:
        """Tell the panel's state about a change of this server or of one of its backups.

        Args:
            event: The change: a `BackupFinished`, `RestoreFinished` or `PowerChanged`.
        """
        if self._listener is not None:
            self._listener(event)

    @property
    def power_state(self) -> str:
        """The process state the node reports ("running", "offline", ...)."""
        return self._power_state

    @power_state.setter
    def power_state(self, value: str) -> None:
        changed = value != self._power_state
        self._power_state = value
        if changed:
            self.notify(PowerChanged(self, value))

    @property
    def status(self) -> str | None:
        """`"restoring_backup"` (or another panel state) while busy, None when idle."""
        if (
            self._status is not None
            and self._status_until is not None
            and time.monotonic() >= self._status_until
        ):
            self._change_status(None, None)
        return self._status

    @status.setter
    def status(self, value: str | None) -> None:
        self._change_status(value, None)

    def set_status(self, value: str | None, duration: float | None = None) -> None:
        """Put the server in `value` state, for `duration` seconds (None: until changed).

        The state ends on time even when nobody looks (a timer on the running loop), so the
        node reports a finished restore without being asked.

        Args:
            value: The panel's status (`"restoring_backup"`…), or None for idle.
            duration: Seconds until the server is idle again; None: until changed.
        """
        self._change_status(value, duration)

    def _change_status(self, value: str | None, duration: float | None) -> None:
        old = self._status
        _cancel(self._status_timer)
        self._status_timer = None
        self._status = value
        self._status_until = None if duration is None else time.monotonic() + duration
        if value is not None and duration is not None:
            self._status_timer = _call_later(duration, self._status_elapsed)
        if old == "restoring_backup" and value != "restoring_backup":
            self.notify(RestoreFinished(self))

    def _status_elapsed(self) -> None:
        self._status_timer = None
        if self._status is not None and self._status_until is not None:
            self._change_status(None, None)

    @property
    def backups(self) -> list[FakeBackup]:
        """Backups that are not deleted, oldest first."""
        return [b for b in self._all_backups if not b.deleted]

    @property
    def all_backups(self) -> list[FakeBackup]:
        """Every backup ever added or created, deleted ones included, oldest first."""
        return list(self._all_backups)

    def attach_backup(self, backup: FakeBackup) -> None:
        """Append `backup` to this server's backups (FakePanel.add_backup and the API do this).

        Args:
            backup: The backup to add.
        """
        self._all_backups.append(backup)


@attrs.define(eq=False)
class FakeBackup:
    """A backup held by a FakePanel; tests may change its fields at any time.

    Made by `FakePanel.add_backup()` and by the API's create.

    Attributes:
        uuid: The backup's UUID.
        name: The backup's name.
        content: The archive's bytes, as the link host serves them.
        server: The server that holds it.
        dialect: The wire dialect it is sent in.
        created_at: When it was created.
        ignored_files: The patterns it reports as left out.
        is_locked: Whether it is locked against deletion.
        checksum_algorithm: The algorithm of the announced checksum (`"sha1"`, `"sha256"`).
        checksum_override: Raw wire value of the hash field when set (str or None); UNSET
            means computed from `content`.
        is_scheduled: Whether a schedule made it (sent by the Pelican dialect only).
        deleted: Whether it was deleted (it stays in `FakeServer.all_backups`).
        download_attempts: GETs of any download link of this backup (each is one attempt).
        links_issued: Download links handed out by the API for this backup.
        link_factory: When set, the download route answers the URL this returns instead of
            a link to the panel's own link host (e.g. a presigned URL of a real S3 server).
        served_content: When set, the link host serves these bytes instead of `content`: the
            stored object differs from the panel's record (`bytes` and the checksum still
            describe `content`).
        object_version: Version of the stored object; each `DownloadFault.change_etag()` adds
            one. A new version has a new ETag and Last-Modified at the S3-style host.
    """

    uuid: str
    name: str
    content: bytes = attrs.field(repr=False)
    server: FakeServer = attrs.field(repr=False)
    dialect: Dialect = attrs.field(repr=False)
    created_at: datetime
    ignored_files: list[str] = attrs.field(factory=list)
    is_locked: bool = False
    checksum_algorithm: Literal["sha1", "sha256"] = "sha1"
    checksum_override: str | Unset | None = attrs.field(default=UNSET, repr=False)
    is_scheduled: bool = False
    deleted: bool = False
    download_attempts: int = 0
    links_issued: int = 0
    link_factory: Callable[[], str] | None = attrs.field(default=None, repr=False)
    served_content: bytes | None = attrs.field(default=None, repr=False)
    object_version: int = 0
    _state: BackupState = attrs.field(default="completed", init=False)
    _completed_at: datetime | None = attrs.field(default=None, init=False)
    _started: float = attrs.field(factory=time.monotonic, init=False, repr=False)
    _duration: float | None = attrs.field(default=None, init=False, repr=False)
    _finish_fails: bool = attrs.field(default=False, init=False, repr=False)
    _digest: tuple[bytes, str, str] | None = attrs.field(default=None, init=False, repr=False)
    _timer: asyncio.TimerHandle | None = attrs.field(default=None, init=False, repr=False)

    def _settle(self, *, elapsed: bool = False) -> None:
        """Finish a timed creation once its duration has passed (`elapsed`: the timer says so)."""
        if self._state != "creating" or self._duration is None:
            return
        if not elapsed and time.monotonic() - self._started < self._duration:
            return
        _cancel(self._timer)
        self._timer = None
        self._state = "failed" if self._finish_fails else "completed"
        self._completed_at = (self.created_at + timedelta(seconds=self._duration)).replace(
            microsecond=0
        )
        self._duration = None
        self.server.notify(BackupFinished(self.server, self))

    def _elapsed(self) -> None:
        self._timer = None
        self._settle(elapsed=True)

    def begin(self, duration: float | None = None, *, fails: bool = False) -> None:
        """Start creating now: done after `duration` s (None: when told), failed if `fails`.

        A timed creation ends on time even when nobody looks (a timer on the running loop), so
        the node reports it without being asked.

        Args:
            duration: Seconds until the backup finishes; None: when `complete()` or `fail()`
                is called.
            fails: Finish it as failed.
        """
        _cancel(self._timer)
        self._timer = None
        self._state = "creating"
        self._completed_at = None
        self._started = time.monotonic()
        self._duration = duration
        self._finish_fails = fails
        if duration is not None:
            self._timer = _call_later(duration, self._elapsed)

    @property
    def state(self) -> BackupState:
        """`"creating"`, `"completed"` or `"failed"` (creation finishes lazily, on access)."""
        self._settle()
        return self._state

    @property
    def is_successful(self) -> bool | None:
        """True when completed, False when failed, None while creating."""
        state = self.state
        return None if state == "creating" else state == "completed"

    @property
    def completed_at(self) -> datetime | None:
        """When the backup finished (completed or failed); None while creating."""
        self._settle()
        return self._completed_at

    @property
    def size(self) -> int:
        """The `bytes` the panel reports: len(content) when completed, else 0."""
        return len(self.content) if self.state == "completed" else 0

    def complete(self, at: datetime | None = None) -> None:
        """Finish the backup successfully, `at` that time (default: now).

        Args:
            at: When it completed; None: now.
        """
        self._finish("completed", at)

    def fail(self, at: datetime | None = None) -> None:
        """Finish the backup as failed, `at` that time (default: now).

        Args:
            at: When it failed; None: now.
        """
        self._finish("failed", at)

    def _finish(self, state: BackupState, at: datetime | None) -> None:
        was_creating = self.state == "creating"
        _cancel(self._timer)
        self._timer = None
        self._state = state
        self._duration = None
        self._completed_at = _now() if at is None else at
        if was_creating:
            self.server.notify(BackupFinished(self.server, self))

    def hexdigest(self, algorithm: str) -> str:
        """Hex digest of `content` with `algorithm` ("sha1", "sha256", ...).

        Args:
            algorithm: A `hashlib` algorithm name.

        Returns:
            The digest in lower-case hex.

        Raises:
            ValueError: `hashlib` does not know the algorithm.
        """
        cached = self._digest
        if cached is not None and cached[0] is self.content and cached[1] == algorithm:
            return cached[2]
        digest = hashlib.new(algorithm, self.content).hexdigest()
        self._digest = (self.content, algorithm, digest)
        return digest

    def wire_checksum_in(self, state: BackupState) -> str | None:
        """The hash field as sent while the backup is in `state` (see `wire_checksum`).

        Args:
            state: `"creating"`, `"completed"` or `"failed"`.

        Returns:
            `checksum_override` when set; else None unless completed; else `"<alg>:<hex>"`,
            or bare SHA-256 hex in the reference dialect.
        """
        if not isinstance(self.checksum_override, Unset):
            return self.checksum_override
        if state != "completed":
            return None
        if self.dialect == "reference":
            return self.hexdigest("sha256")
        return f"{self.checksum_algorithm}:{self.hexdigest(self.checksum_algorithm)}"

    @property
    def wire_checksum(self) -> str | None:
        """The hash field as sent: `checksum` ("sha1:<hex>"), or reference `sha256_hash`."""
        return self.wire_checksum_in(self.state)

    def visible_content(self) -> bytes | None:
        """The file as the node holds it now: None when there is none (deleted or failed).

        While creating, a growing prefix of `content`; `served_content` is not applied here.

        Returns:
            The bytes the node holds, or None.
        """
        if self.deleted:
            return None
        state = self.state
        if state == "completed":
            return self.content
        if state == "failed":
            return None
        if self._duration:
            fraction = min(1.0, (time.monotonic() - self._started) / self._duration)
        else:
            fraction = 0.5
        return self.content[: int(len(self.content) * fraction)]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@attrs.frozen
class RecordedRequest:
    """One request received by the panel ("api") or the link host ("link").

    `FakePanel.requests` lists them in arrival order.

    Attributes:
        method: The HTTP method.
        path: The path as received (path prefix included), without the query string.
        query: The query string's parameters.
        headers: The request's headers; names are lower-case, repeated headers are joined
            with ", ".
        body: The request's body.
        host: `"api"` for the panel, `"link"` for the link host.
        status: Final status sent; 0 when the connection was dropped before a status line.
        backup_uuid: The backup the request was about, if any.
        time: `time.monotonic()` when the request arrived.
        fault: Name of the scripted fault applied, if any (e.g. "inject:status", "drop").
        bytes_sent: Body bytes the link host handed to the connection (0 for the panel API).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    host: Literal["api", "link"]
    status: int
    backup_uuid: str | None
    time: float
    fault: str | None = None
    bytes_sent: int = 0


@attrs.frozen
class DownloadFault:
    """One scripted misbehaviour of the link host for one GET of a backup's link.

    Made with its class methods (`DownloadFault.drop_after(1000)`…) and handed to
    `FakePanel.script_download()`.

    Attributes:
        kind: What goes wrong: `"drop"`, `"corrupt"`, `"stall"`, `"status"`, `"expired"`,
            `"ignore_range"`, `"wrong_range"`, `"change_etag"`, `"gzip"`, `"short"`,
            `"endless"` or `"trickle"`.
        after_bytes: Body bytes sent before the fault (`drop`, `stall`, `short`).
        offset: The byte flipped (`corrupt`), or the shift of the range (`wrong_range`).
        seconds: The silence (`stall`), or the linger before the drop (`drop`).
        code: The status answered (`status`).
        retry_after: The `Retry-After` sent with it (`status`), if any.
        rate: Bytes per second, for `trickle`.
        content: The new object's bytes, for `change_etag` (None: the same bytes).
    """

    kind: DownloadFaultKind
    after_bytes: int = 0
    offset: int = 0
    seconds: float = 0.0
    code: int = 0
    retry_after: float | str | None = None
    rate: float = 0.0
    content: bytes | None = attrs.field(default=None, repr=False)

    @classmethod
    def drop_after(cls, n_bytes: int, *, linger: float = 0.05) -> DownloadFault:
        """Send the headers (full Content-Length) and `n_bytes` of body, then drop.

        The connection is closed `linger` seconds after those bytes are flushed, so that a client
        that keeps reading has consumed them (aiohttp discards unread data once it sees the
        truncation); `linger=0` closes at once.

        Args:
            n_bytes: Body bytes sent before the drop.
            linger: Seconds between the last byte and the drop.

        Returns:
            The fault.
        """
        return cls("drop", after_bytes=n_bytes, seconds=linger)

    @classmethod
    def corrupt(cls, offset: int) -> DownloadFault:
        """Serve the full length with the byte at file offset `offset` flipped.

        Args:
            offset: The file offset of the corrupted byte.

        Returns:
            The fault.
        """
        return cls("corrupt", offset=offset)

    @classmethod
    def stall(cls, after_bytes: int, seconds: float) -> DownloadFault:
        """Send `after_bytes` of body, go silent for `seconds`, then continue.

        Args:
            after_bytes: Body bytes sent before the silence.
            seconds: How long the host stays silent.

        Returns:
            The fault.
        """
        return cls("stall", after_bytes=after_bytes, seconds=seconds)

    @classmethod
    def status(cls, code: int, retry_after: float | str | None = None) -> DownloadFault:
        """Answer `code` (5xx or 429) instead of the file, with an optional Retry-After.

        Args:
            code: The HTTP status.
            retry_after: The `Retry-After` header (seconds or an HTTP date); None: none.

        Returns:
            The fault.
        """
        return cls("status", code=code, retry_after=retry_after)

    @classmethod
    def expired(cls) -> DownloadFault:
        """Answer as if the link had expired (wings: 500; s3: 403 AccessDenied).

        Returns:
            The fault.
        """
        return cls("expired")

    @classmethod
    def ignore_range(cls) -> DownloadFault:
        """Answer a Range request with 200, the whole body and no `Accept-Ranges`.

        What a proxy that does not do ranges sends. Wings-style links always behave so.

        Returns:
            The fault.
        """
        return cls("ignore_range")

    @classmethod
    def wrong_content_range(cls, shift: int) -> DownloadFault:
        """Answer a Range request with 206 for a range starting `shift` bytes off the asked one.

        Content-Range and the body agree with each other (the bytes really are those of the
        shifted range, clamped to the file) but not with the request. A request without Range
        is answered normally. Works on both link hosts.

        Args:
            shift: Bytes between the asked start and the answered one (not 0; negative
                shifts back).

        Returns:
            The fault.

        Raises:
            ValueError: `shift` is 0.
        """
        if shift == 0:
            raise ValueError("shift must not be 0")
        return cls("wrong_range", offset=shift)

    @classmethod
    def change_etag(cls, content: bytes | None = None) -> DownloadFault:
        """Store a new version of the object before this GET: it keeps that version afterwards.

        The new version has a new ETag and Last-Modified, so an `If-Range` naming the old one
        gets 200 and the whole new object, as S3 and HTTP answer. With `content`, the new
        version holds those bytes (see `FakeBackup.served_content`); otherwise the same bytes.

        Args:
            content: The new version's bytes; None: the same bytes.

        Returns:
            The fault.
        """
        return cls("change_etag", content=None if content is None else bytes(content))

    @classmethod
    def gzip(cls) -> DownloadFault:
        """Send the archive with `Content-Encoding: gzip`, the bytes untouched.

        As S3 does for an object uploaded with that metadata: the bytes on the wire are the
        stored `.tar.gz`, whose checksum the panel announces. A client that decodes the
        encoding ends up with the inner tar (other bytes, another length), not the archive.

        Returns:
            The fault.
        """
        return cls("gzip")

    @classmethod
    def short_body(cls, n_bytes: int) -> DownloadFault:
        """End the body cleanly after `n_bytes`, with no Content-Length (chunked encoding).

        Args:
            n_bytes: Body bytes sent before the end.

        Returns:
            The fault.

        Raises:
            ValueError: `n_bytes` is negative.
        """
        if n_bytes < 0:
            raise ValueError("n_bytes must be ≥ 0")
        return cls("short", after_bytes=n_bytes)

    @classmethod
    def endless(cls) -> DownloadFault:
        """Send the body with no Content-Length, then zeros forever, until the client leaves.

        Writes wait for the client to read (nothing piles up in the server), and the stream
        ends when the client disconnects or the panel closes.

        Returns:
            The fault.
        """
        return cls("endless")

    @classmethod
    def trickle(cls, bytes_per_second: float) -> DownloadFault:
        """Send the body (with its Content-Length) at `bytes_per_second`, at least 1.

        Byte ``i`` goes out ``i / bytes_per_second`` seconds after the headers, so the host is
        never silent for more than a second.

        Args:
            bytes_per_second: The pace, at least 1.

        Returns:
            The fault.

        Raises:
            ValueError: `bytes_per_second` is below 1.
        """
        if not bytes_per_second >= 1:
            raise ValueError("bytes_per_second must be ≥ 1")
        return cls("trickle", rate=float(bytes_per_second))


@attrs.define(eq=False)
class Fault:
    """A scripted API fault registered with `FakePanel.inject()`, which describes its fields.

    Attributes:
        kind: What goes wrong (see `FakePanel.inject()`).
        status: The status answered.
        method: The HTTP method it applies to; None: any.
        path: A regex searched in the request path (without the prefix); None: any.
        times: How many matching requests it hits in all.
        headers: Extra headers of the answer.
        body: A raw body to send instead of the kind's own.
        json_body: The JSON document of a `"json"` fault.
        delay: Seconds to wait before answering (for `"stall"`: the silence).
        used: How many requests it has hit so far.
    """

    kind: FaultKind
    status: int
    method: str | None
    path: str | None
    times: int
    headers: dict[str, str]
    body: bytes | None
    json_body: Any
    delay: float
    used: int = 0
    _pattern: re.Pattern[str] | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._pattern = None if self.path is None else re.compile(self.path)

    @property
    def remaining(self) -> int:
        """How many more matching requests this fault will hit."""
        return max(self.times - self.used, 0)

    def cancel(self) -> None:
        """Stop applying this fault."""
        self.times = self.used

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a request (`path` without the panel's path prefix).

        Args:
            method: The request's method.
            path: The request's path, without the panel's path prefix.

        Returns:
            True when the fault has hits left and matches the method and path.
        """
        if self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self._pattern is None or self._pattern.search(path) is not None


# What the panel's state tells its subscribers (the node): one object per change.


@attrs.frozen(eq=False)
class BackupFinished:
    """A backup left "creating" (completed or failed); the panel has recorded the result."""

    server: FakeServer
    backup: FakeBackup


@attrs.frozen(eq=False)
class RestoreFinished:
    """A restore ended: the server's status is back from "restoring_backup"."""

    server: FakeServer


@attrs.frozen(eq=False)
class PowerChanged:
    """The server's `power_state` changed."""

    server: FakeServer
    state: str


#: A change of the panel's state, as `PanelState.subscribe` callbacks receive it.
StateEvent = BackupFinished | RestoreFinished | PowerChanged


@attrs.frozen
class SocketFault:
    """One scripted misbehaviour of the node for one websocket connection of a server.

    Set with `FakePanel.script_socket(server, *faults)`: each upgrade request for the server
    takes the next one (None: normal). Timed faults count from the connection's first
    `auth success`. Made with its class methods (`SocketFault.refuse()`…).

    Attributes:
        kind: What goes wrong: `"refuse"`, `"drop"`, `"close"`, `"silent"` or
            `"miss_events"`.
        status: HTTP status of a refused upgrade.
        code: Close code of a clean close.
        seconds: Seconds after `auth success` before a drop or a close.
    """

    kind: SocketFaultKind
    status: int = 0
    code: int = 0
    seconds: float = 0.0

    @classmethod
    def refuse(cls, status: int = 403) -> SocketFault:
        """Refuse the upgrade with this HTTP status (a plain response, no websocket).

        Args:
            status: A 4xx or 5xx status.

        Returns:
            The fault.

        Raises:
            ValueError: `status` is not a 4xx or 5xx.
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be a 4xx or 5xx")
        return cls("refuse", status=status)

    @classmethod
    def drop_after(cls, seconds: float) -> SocketFault:
        """Cut the TCP connection `seconds` after `auth success`, with no close frame.

        Args:
            seconds: Seconds after `auth success`, at least 0.

        Returns:
            The fault.

        Raises:
            ValueError: `seconds` is negative.
        """
        if not seconds >= 0:
            raise ValueError("seconds must be ≥ 0")
        return cls("drop", seconds=float(seconds))

    @classmethod
    def close(cls, code: int, after: float = 0.0) -> SocketFault:
        """Close the websocket cleanly with `code`, `after` seconds after `auth success`.

        Args:
            code: A close code a server may send (1000 to 4999, not 1004, 1005, 1006, 1015).
            after: Seconds after `auth success`, at least 0.

        Returns:
            The fault.

        Raises:
            ValueError: A code a server may not send, or a negative `after`.
        """
        if not 1000 <= code <= 4999 or code in (1004, 1005, 1006, 1015):
            raise ValueError(f"{code} is not a close code a server may send")
        if not after >= 0:
            raise ValueError("after must be ≥ 0")
        return cls("close", code=code, seconds=float(after))

    @classmethod
    def silent(cls) -> SocketFault:
        """Accept the upgrade, then never answer anything (not even `auth`) and never close.

        Returns:
            The fault.
        """
        return cls("silent")

    @classmethod
    def miss_events(cls) -> SocketFault:
        """A working socket that never delivers `backup completed` or `backup restore completed`.

        Returns:
            The fault.
        """
        return cls("miss_events")


@attrs.define(eq=False)
class NodeConnection:
    """One websocket upgrade request to the node, and what went over the socket afterwards.

    `FakePanel.node_connections()` lists them.

    Attributes:
        server_uuid: The server the request was for.
        origin: The request's Origin header (None when absent).
        opened_at: `time.monotonic()` when the upgrade request arrived.
        closed_at: `time.monotonic()` when the socket (or the refused request) ended; None
            while open.
        status: 101 when upgraded; otherwise the status the upgrade was refused with.
        close_code: The close code: the node's when it closed, the client's when the client
            did; None when the connection was cut without a close frame, refused, or is
            still open.
        fault: The scripted SocketFault's kind applied to this connection, if any.
        auth_count: `auth` messages that succeeded.
        received: Frames received from the client that were JSON objects, in order.
        sent: Frames the node sent that were JSON objects (injected frames included), in
            order.
    """

    server_uuid: str
    origin: str | None
    opened_at: float
    closed_at: float | None = None
    status: int = 101
    close_code: int | None = None
    fault: str | None = None
    auth_count: int = 0
    received: list[dict[str, Any]] = attrs.field(factory=list)
    sent: list[dict[str, Any]] = attrs.field(factory=list)

    @property
    def is_open(self) -> bool:
        """Whether the socket is still open."""
        return self.status == 101 and self.closed_at is None

    def events_sent(self) -> list[str]:
        """The `event` names of `sent`, in order."""
        return [str(frame.get("event")) for frame in self.sent]
