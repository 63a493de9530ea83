"""The SDK's data: immutable attrs classes with Python names and no wire details."""

from __future__ import annotations

import enum
import pathlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from attrs import frozen

__all__ = [
    "Backup",
    "BackupCompleted",
    "BackupState",
    "Checksum",
    "DownloadProgress",
    "DownloadResult",
    "ErrorDetail",
    "Event",
    "NodeEvent",
    "Page",
    "RateLimit",
    "RestoreCompleted",
    "Server",
    "StatusChanged",
]

T = TypeVar("T")


class BackupState(str, enum.Enum):
    """Where a backup is in its life: being created, completed, or failed.

    A ``str`` enum (``BackupState.COMPLETED == "completed"``), read from ``Backup.state``.
    """

    CREATING = "creating"
    """The node is still writing the archive (``is_successful`` is not known yet)."""
    COMPLETED = "completed"
    """The archive is complete and can be downloaded or restored."""
    FAILED = "failed"
    """The node failed to make the archive: there is nothing to download."""

    def __str__(self) -> str:
        return self.value


@frozen
class Checksum:
    """A digest of an archive: ``str(checksum) == "sha1:<hex>"``.

    Attributes:
        algorithm: The ``hashlib`` name of the algorithm: ``"sha1"`` (what Wings uses),
            ``"sha256"`` (older backups, and the reference dialect's ``sha256_hash``), or
            another algorithm the panel names.
        hexdigest: The digest, in lower-case hex.
    """

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@frozen
class Backup:
    """One backup of a server, as the panel reports it.

    Attributes:
        uuid: The backup's UUID, which every backup method accepts in place of the ``Backup``.
        name: The name given at creation (the panel makes one up when none was given).
        ignored_files: The patterns left out of the archive.
        checksum: The parsed checksum; None while the backup is being created, and when the
            panel's value is absent or malformed (see ``checksum_raw``).
        checksum_raw: The checksum exactly as the panel sent it (``"sha1:<hex>"``, or the
            reference dialect's bare SHA-256 hex), or None.
        bytes: The archive's size as the panel announced it (0 while being created). A
            download never writes more than this.
        created_at: When the backup was started (timezone-aware).
        completed_at: When it completed or failed; None while it is being created.
        is_successful: True once completed, False once failed, None while being created.
        is_locked: Whether the backup is locked against deletion.
        is_scheduled: Whether a schedule made it (Pelican only; None elsewhere).
    """

    uuid: str
    name: str
    ignored_files: tuple[str, ...]
    checksum: Checksum | None
    checksum_raw: str | None
    bytes: int
    created_at: datetime
    completed_at: datetime | None
    is_successful: bool | None  # None while the backup is being created
    is_locked: bool
    is_scheduled: bool | None = None

    @property
    def state(self) -> BackupState:
        """``CREATING`` while ``is_successful`` is unknown, then ``COMPLETED`` or ``FAILED``.

        Returns:
            The backup's state, derived from ``is_successful``.
        """
        if self.is_successful is None:
            return BackupState.CREATING
        return BackupState.COMPLETED if self.is_successful else BackupState.FAILED


@frozen
class Server:
    """A server the API key can see.

    Attributes:
        identifier: The 8-character short id (what ``client.backups()`` usually takes).
        uuid: The server's full UUID (``client.backups()`` takes it too).
        name: The server's name.
        status: The panel's status of the server: ``"restoring_backup"`` while a restore
            runs, another of the panel's states while it is busy otherwise (``"installing"``,
            ``"suspended"``…), None when idle.
    """

    identifier: str
    uuid: str
    name: str
    status: str | None = None


@frozen
class Page(Generic[T]):
    """One page of a paginated list.

    Attributes:
        items: The page's items (``Backup`` or ``Server``), in the panel's order.
        page: This page's number, from 1.
        per_page: The page size the panel reports (at most 50 on real panels).
        total: How many items the whole list holds, as the panel counts them.
        total_pages: How many pages the list has, as the panel counts them.
        backup_count: For a list of backups, how many count against the server's limit;
            None where the panel does not say (the reference dialect) and for servers.
    """

    items: tuple[T, ...]
    page: int
    per_page: int
    total: int
    total_pages: int
    backup_count: int | None = None


@frozen
class RateLimit:
    """The panel's rate limit as last reported: requests allowed, left, and when it resets.

    Attributes:
        limit: Requests allowed per window (``X-RateLimit-Limit``).
        remaining: Requests left in the current window (``X-RateLimit-Remaining``).
        reset_at: When the window resets (timezone-aware), or None when the panel did not
            say (``X-RateLimit-Reset``).
    """

    limit: int
    remaining: int
    reset_at: datetime | None = None


@frozen
class ErrorDetail:
    """One entry of the panel's ``errors`` list, as ``APIStatusError.errors`` carries it.

    Attributes:
        code: The panel's structured error code (``"TooManyBackupsException"``…), if any.
        status: The HTTP status the entry gives, if any.
        detail: The human-readable explanation, if any (the API key masked).
        meta: Whatever else the entry carried (validation rules, the source field), if any.
    """

    code: str | None
    status: int | None
    detail: str | None
    meta: Mapping[str, Any] | None = None


@frozen
class DownloadProgress:
    """Progress of one download, passed to ``progress`` callbacks.

    Attributes:
        server: The server the backup belongs to.
        backup_uuid: The backup being downloaded.
        bytes_done: Bytes written so far: it only grows within an attempt, goes back when
            an attempt restarts from zero, and equals ``bytes_total`` on the last call.
        bytes_total: The archive's size, or None when the panel did not announce one.
    """

    server: str
    backup_uuid: str
    bytes_done: int
    bytes_total: int | None


@frozen
class DownloadResult:
    """A finished download: where the file is and what it hashes to.

    Attributes:
        path: The final file (``<dest>/<uuid>.tar.gz`` when the destination is a directory).
        bytes: The file's size.
        checksum: The checksum of the bytes written, with the backup's algorithm.
        verified: True when the checksum was compared with the panel's and matched; False
            with ``verify=False``.
        attempts: GETs of a link this download made (0 when ``skipped``).
        skipped: True when a verified copy was already at ``path`` and nothing was fetched.
        segments: The most parallel ranged streams an attempt used (1: one stream).
        resumed_from: Bytes kept from an earlier, interrupted run (0: none).
    """

    path: pathlib.Path
    bytes: int
    checksum: Checksum
    verified: bool
    attempts: int
    skipped: bool = False
    segments: int = 1
    resumed_from: int = 0


@frozen
class BackupCompleted:
    """The node says a backup finished (``is_successful`` False: it failed).

    Attributes:
        server: The server the event is about.
        backup_uuid: The backup that finished.
        is_successful: True when the archive is complete, False when it failed.
        checksum: The archive's checksum as the node announced it, or None.
        bytes: The archive's size as the node announced it.
    """

    server: str
    backup_uuid: str
    is_successful: bool
    checksum: Checksum | None
    bytes: int


@frozen
class RestoreCompleted:
    """The node says a restore of the server finished (whatever its outcome).

    Attributes:
        server: The server the event is about.
    """

    server: str


@frozen
class StatusChanged:
    """The server's power state: ``"running"``, ``"offline"``, ``"starting"``, ``"stopping"``.

    Attributes:
        server: The server the event is about.
        state: The new power state, as the node names it.
    """

    server: str
    state: str


@frozen
class NodeEvent:
    """Any other event of the node, raw.

    Attributes:
        server: The server the event is about.
        name: The event's name, as the node sent it (``"console output"``…).
        args: The event's arguments, as strings.
    """

    server: str
    name: str
    args: tuple[str, ...]


#: What ``client.events(server)`` yields.
Event = BackupCompleted | RestoreCompleted | StatusChanged | NodeEvent
