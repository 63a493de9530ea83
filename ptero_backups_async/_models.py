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
    """Where a backup is in its life: being created, completed, or failed."""

    CREATING = "creating"
    COMPLETED = "completed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@frozen
class Checksum:
    """A digest of an archive: ``str(checksum) == "sha1:<hex>"``."""

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@frozen
class Backup:
    """One backup of a server, as the panel reports it."""

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
        """``CREATING`` while ``is_successful`` is unknown, then ``COMPLETED`` or ``FAILED``."""
        if self.is_successful is None:
            return BackupState.CREATING
        return BackupState.COMPLETED if self.is_successful else BackupState.FAILED


@frozen
class Server:
    """A server the API key can see."""

    identifier: str
    uuid: str
    name: str
    status: str | None = None


@frozen
class Page(Generic[T]):
    """One page of a paginated list."""

    items: tuple[T, ...]
    page: int
    per_page: int
    total: int
    total_pages: int
    backup_count: int | None = None


@frozen
class RateLimit:
    """The panel's rate limit as last reported: requests allowed, left, and when it resets."""

    limit: int
    remaining: int
    reset_at: datetime | None = None


@frozen
class ErrorDetail:
    """One entry of the panel's ``errors`` list."""

    code: str | None
    status: int | None
    detail: str | None
    meta: Mapping[str, Any] | None = None


@frozen
class DownloadProgress:
    """Progress of one download, passed to ``progress`` callbacks."""

    server: str
    backup_uuid: str
    bytes_done: int
    bytes_total: int | None


@frozen
class DownloadResult:
    """A finished download: where the file is and what it hashes to."""

    path: pathlib.Path
    bytes: int
    checksum: Checksum
    verified: bool
    attempts: int
    skipped: bool = False
    #: Parallel ranged streams used (1: one stream).
    segments: int = 1
    #: Bytes kept from an earlier, interrupted run (0: none).
    resumed_from: int = 0


@frozen
class BackupCompleted:
    """The node says a backup finished (``is_successful`` False: it failed)."""

    server: str
    backup_uuid: str
    is_successful: bool
    checksum: Checksum | None
    bytes: int


@frozen
class RestoreCompleted:
    """The node says a restore of the server finished (whatever its outcome)."""

    server: str


@frozen
class StatusChanged:
    """The server's power state: ``"running"``, ``"offline"``, ``"starting"``, ``"stopping"``."""

    server: str
    state: str


@frozen
class NodeEvent:
    """Any other event of the node, raw."""

    server: str
    name: str
    args: tuple[str, ...]


#: What ``client.events(server)`` yields.
Event = BackupCompleted | RestoreCompleted | StatusChanged | NodeEvent
