"""The fake panel's state: settings, servers and backups, throttles, scripted faults, request log.

No HTTP here. The API routes and the link host read and change the panel through the public
methods below and the public fields of the models; nothing else writes this module's private
attributes.
"""

from __future__ import annotations

import math
import uuid as uuid_mod
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Literal

import attrs

from ._models import (
    BackupState,
    Dialect,
    DownloadFault,
    FakeBackup,
    FakeServer,
    Fault,
    RecordedRequest,
    SocketFault,
    StateEvent,
    Storage,
    Unset,
)
from ._wire import make_archive

__all__ = ["Action", "PanelConfig", "PanelState", "RateLimitHit"]

#: A server action under a per-server throttle.
Action = Literal["create", "restore"]


@attrs.define
class PanelConfig:
    """A FakePanel's settings; the FakePanel attributes of the same names read and write these."""

    dialect: Dialect
    storage: Storage
    api_key: str
    #: "" or "/some/prefix" (normalised: leading slash, no trailing one).
    path_prefix: str
    #: API requests per `rate_limit_period` seconds, per key (or per client IP without one).
    rate_limit: int
    rate_limit_period: float
    #: (actions, seconds) per server; None: no throttle.
    create_throttle: tuple[int, float] | None
    restore_throttle: tuple[int, float] | None
    #: How long a backup created through the API takes, in seconds.
    backup_duration: float
    #: How long a restore keeps the server busy, in seconds.
    restore_duration: float
    #: Lifetime of a download link, in seconds.
    link_ttl: float
    #: Lifetime of a websocket token, in seconds.
    ws_token_lifetime: float = 600.0
    #: How often the node checks each socket's token for expiry, in seconds.
    ws_check_interval: float = 30.0


@attrs.frozen
class RateLimitHit:
    """One API request counted against the rate limit."""

    limit: int
    remaining: int
    #: Seconds until the window resets when the request is over the limit; None: allowed.
    retry_after: int | None = None


@attrs.define
class _Window:
    start: float
    count: int = 0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class PanelState:
    """Everything a FakePanel knows, behind public mutators; shared by its routes and link host."""

    def __init__(self, config: PanelConfig) -> None:
        #: The panel's settings (mutable: a change applies to the next request).
        self.config = config
        #: Every request received, API and link host, in arrival order.
        self.requests: list[RecordedRequest] = []
        self._servers: list[FakeServer] = []
        self._faults: list[Fault] = []
        self._scripts: dict[str, deque[DownloadFault | None]] = {}
        self._windows: dict[str, _Window] = {}
        self._fail_next: dict[FakeServer, int] = {}
        self._action_times: dict[tuple[FakeServer, Action], list[float]] = {}
        self._socket_scripts: dict[FakeServer, deque[SocketFault | None]] = {}
        self._subscribers: list[Callable[[StateEvent], None]] = []
        self._users: dict[str, str] = {}

    # Change notifications.

    def subscribe(self, callback: Callable[[StateEvent], None]) -> Callable[[], None]:
        """Call `callback` with every StateEvent from now on; returns the unsubscribe function.

        Events are published right after the change is recorded (a backup's result, a server's
        status back to None), from whatever code made the change: a route, a test, or the
        timer that ends a timed backup or restore. Callbacks must not block.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: StateEvent) -> None:
        """Hand `event` to every subscriber (servers call this through `FakeServer.notify`)."""
        for callback in list(self._subscribers):
            callback(event)

    # Servers and backups.

    @property
    def servers(self) -> list[FakeServer]:
        """All servers, in the order they were added."""
        return list(self._servers)

    def add_server(
        self,
        *,
        name: str,
        backup_limit: int,
        identifier: str | None,
        uuid: str | None,
        owner_key: str | None,
        fail_backups: bool,
        permissions: Iterable[str] = ("*",),
        owner_is_admin: bool = False,
    ) -> FakeServer:
        """Add a server (see `FakePanel.add_server`); ValueError if its id or UUID is taken."""
        if uuid is None:
            uuid = str(uuid_mod.uuid4())
            if identifier is not None:
                uuid = identifier + uuid[len(identifier) :]
        if identifier is None:
            identifier = uuid[:8]
        for other in self._servers:
            if identifier in (other.identifier, other.uuid) or uuid in (
                other.identifier,
                other.uuid,
            ):
                raise ValueError(f"a server with id {identifier!r} or uuid {uuid!r} exists")
        server = FakeServer(
            identifier=identifier,
            uuid=uuid,
            name=name,
            backup_limit=backup_limit,
            owner_key=owner_key,
            fail_backups=fail_backups,
            permissions=list(permissions),
            owner_is_admin=owner_is_admin,
            listener=self.publish,
        )
        self._servers.append(server)
        return server

    def add_backup(
        self,
        server: FakeServer,
        *,
        content: bytes | None,
        name: str,
        locked: bool,
        state: BackupState,
        checksum_algorithm: Literal["sha1", "sha256"],
        checksum: str | Unset | None,
        created_at: datetime | None,
        uuid: str | None,
        ignored_files: list[str] | None,
        is_scheduled: bool,
    ) -> FakeBackup:
        """Add a backup in `state` (see `FakePanel.add_backup`); ValueError if the UUID is taken."""
        if uuid is None:
            uuid = str(uuid_mod.uuid4())
        elif any(b.uuid == uuid for s in self._servers for b in s.all_backups):
            raise ValueError(f"a backup with uuid {uuid!r} exists")
        if created_at is None:
            created_at = _utcnow()
        elif created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=timezone.utc)
        backup = FakeBackup(
            uuid=uuid,
            name=name,
            content=make_archive(uuid) if content is None else bytes(content),
            server=server,
            dialect=self.config.dialect,
            created_at=created_at.replace(microsecond=0),
            ignored_files=list(ignored_files or []),
            is_locked=locked,
            checksum_algorithm=checksum_algorithm,
            checksum_override=checksum,
            is_scheduled=is_scheduled,
        )
        if state == "creating":
            backup.begin(None, fails=False)
        elif state == "failed":
            backup.fail(at=backup.created_at)
        elif state == "completed":
            backup.complete(at=backup.created_at)
        else:
            raise ValueError(f"unknown backup state {state!r}")
        server.attach_backup(backup)
        return backup

    def create_backup(
        self,
        server: FakeServer,
        *,
        name: str,
        ignored_files: list[str],
        is_locked: bool,
        created_at: datetime,
        now: float,
    ) -> FakeBackup:
        """Start a backup as the API's create does; it takes `backup_duration` seconds.

        It counts against the create throttle, and ends failed when the server fails backups
        or `fail_next_backup` asked for it.
        """
        fails = self._take_failure(server)
        uuid = str(uuid_mod.uuid4())
        backup = FakeBackup(
            uuid=uuid,
            name=name,
            content=make_archive(uuid),
            server=server,
            dialect=self.config.dialect,
            created_at=created_at,
            ignored_files=ignored_files,
            is_locked=is_locked,
        )
        backup.begin(self.config.backup_duration, fails=fails)
        server.attach_backup(backup)
        self._action_times.setdefault((server, "create"), []).append(now)
        return backup

    def restore_backup(
        self, server: FakeServer, backup: FakeBackup, *, truncate: bool, now: float
    ) -> None:
        """Record a restore of `backup` and keep the server busy for `restore_duration`."""
        self._action_times.setdefault((server, "restore"), []).append(now)
        server.restores.append((backup.uuid, truncate))
        server.set_status("restoring_backup", self.config.restore_duration)

    def fail_next_backup(self, server: FakeServer, times: int = 1) -> None:
        """Make the next `times` backups created through the API end as failed."""
        self._fail_next[server] = self._fail_next.get(server, 0) + times

    def _take_failure(self, server: FakeServer) -> bool:
        pending = self._fail_next.get(server, 0)
        if pending > 0:
            self._fail_next[server] = pending - 1
        return server.fail_backups or pending > 0

    def server(self, id_or_uuid: str) -> FakeServer:
        """The server with this short id or UUID (KeyError if none)."""
        for server in self._servers:
            if id_or_uuid in (server.identifier, server.uuid):
                return server
        raise KeyError(id_or_uuid)

    def backup(self, uuid: str) -> FakeBackup:
        """The backup with this UUID, deleted ones included (KeyError if none)."""
        for server in self._servers:
            for backup in server.all_backups:
                if backup.uuid == uuid:
                    return backup
        raise KeyError(uuid)

    def resolve_server(self, server: FakeServer | str) -> FakeServer:
        """`server` itself, or the server with that short id or UUID."""
        return server if isinstance(server, FakeServer) else self.server(server)

    def resolve_backup(self, backup: FakeBackup | str) -> FakeBackup:
        """`backup` itself, or the backup with that UUID."""
        return backup if isinstance(backup, FakeBackup) else self.backup(backup)

    def internal_id(self, server: FakeServer) -> int:
        """The panel's numeric id of `server` (1-based, in the order servers were added)."""
        return self._servers.index(server) + 1

    # Keys.

    def owner(self, server: FakeServer) -> str:
        """The API key that sees `server`: its `owner_key`, else the panel's key."""
        return server.owner_key if server.owner_key is not None else self.config.api_key

    def knows_key(self, key: str) -> bool:
        """Whether `key` is the panel's key or some server's owner key."""
        return key == self.config.api_key or any(s.owner_key == key for s in self._servers)

    def user_uuid(self, key: str) -> str:
        """The UUID of the user that `key` belongs to (one user per key)."""
        return self._users.setdefault(key, str(uuid_mod.uuid4()))

    def servers_of(self, key: str) -> list[FakeServer]:
        """The servers `key` can see, in the order they were added."""
        return [s for s in self._servers if self.owner(s) == key]

    def find_server(self, ident: str, key: str) -> FakeServer | None:
        """The server with this short id or UUID if `key` can see it."""
        for server in self._servers:
            if ident in (server.identifier, server.uuid) and self.owner(server) == key:
                return server
        return None

    # Throttles.

    def throttle_wait(self, server: FakeServer, action: Action, now: float) -> int | None:
        """Whole seconds until `server` may `action` again under its throttle; None: it may now.

        Counts the actions recorded by `create_backup` and `restore_backup` (deleted backups
        included) within the throttle's period.
        """
        spec = self.config.create_throttle if action == "create" else self.config.restore_throttle
        if spec is None:
            return None
        limit, period = spec
        times = self._action_times.setdefault((server, action), [])
        times[:] = [t for t in times if now - t < period]
        if len(times) < limit:
            return None
        return max(1, math.ceil(times[-limit] + period - now))

    def hit_rate_limit(self, bucket: str, now: float) -> RateLimitHit:
        """Count one API request of `bucket` (a key, or "ip:<address>"), unless over the limit."""
        window = self._windows.get(bucket)
        if window is None or now - window.start >= self.config.rate_limit_period:
            window = self._windows[bucket] = _Window(start=now)
        limit = self.config.rate_limit
        if window.count >= limit:
            retry = max(1, math.ceil(window.start + self.config.rate_limit_period - now))
            return RateLimitHit(limit=limit, remaining=0, retry_after=retry)
        window.count += 1
        return RateLimitHit(limit=limit, remaining=limit - window.count)

    # Scripted faults.

    def add_fault(self, fault: Fault) -> None:
        """Register an API fault; earlier ones are tried first."""
        self._faults.append(fault)

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first fault that matches this request, now counted as used; None if none does."""
        fault = next((f for f in self._faults if f.matches(method, path)), None)
        if fault is not None:
            fault.used += 1
        return fault

    def script_download(self, backup: FakeBackup, faults: Iterable[DownloadFault | None]) -> None:
        """Script the next GETs of `backup`'s links, replacing any earlier script."""
        self._scripts[backup.uuid] = deque(faults)

    def next_download_fault(self, backup: FakeBackup) -> DownloadFault | None:
        """Count one GET of a link of `backup`; the scripted fault for it, already in effect.

        A `change_etag` fault stores the new version of the object here, before it is served.
        """
        backup.download_attempts += 1
        script = self._scripts.get(backup.uuid)
        fault = script.popleft() if script else None
        if fault is not None and fault.kind == "change_etag":
            backup.object_version += 1
            if fault.content is not None:
                backup.served_content = fault.content
        return fault

    def script_socket(self, server: FakeServer, faults: Iterable[SocketFault | None]) -> None:
        """Script the next websocket connections of `server`, replacing any earlier script."""
        self._socket_scripts[server] = deque(faults)

    def next_socket_fault(self, server: FakeServer) -> SocketFault | None:
        """The scripted fault of the next websocket connection of `server`, now used."""
        script = self._socket_scripts.get(server)
        return script.popleft() if script else None

    def clear_faults(self) -> None:
        """Drop every scripted API fault, download script and socket script."""
        self._faults.clear()
        self._scripts.clear()
        self._socket_scripts.clear()

    # Request log.

    def log_request(self, rec: RecordedRequest) -> None:
        """Append a request that has just arrived."""
        self.requests.append(rec)

    def update_request(self, old: RecordedRequest, new: RecordedRequest) -> None:
        """Replace the logged `old` (by identity) with `new`, once its outcome is known."""
        for i in range(len(self.requests) - 1, -1, -1):
            if self.requests[i] is old:
                self.requests[i] = new
                return
