"""Downloads shared by ``download``, ``sync`` and ``demo``: batches, mirrors and manifests."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from .._client import PteroClient
from .._download import DEFAULT_MIN_RATE
from .._errors import InvalidArgumentError
from .._models import Backup, BackupState, DownloadOutcome
from .._sansio import check_backup_uuid, check_server_id
from ._render import TransferProgress, checksum_text, json_text, quoted, visible

__all__ = [
    "MANIFEST",
    "Rejected",
    "ServerSync",
    "SyncReport",
    "label_for",
    "sync_servers",
    "transfer",
    "usable_backups",
    "write_json_atomic",
]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Rejected:
    """An entry of the panel's listing that cannot be acted on (an id the SDK refuses).

    ``server`` and ``uuid`` are exactly what the panel sent; ``uuid`` is None when the server
    itself is the rejected entry. It is reported and left out; the rest of the job goes on.
    """

    server: str
    uuid: str | None
    reason: str

    def json(self) -> dict[str, Any]:
        """The entry as JSON (exact values: JSON escapes what needs escaping)."""
        return {"server": self.server, "uuid": self.uuid, "reason": self.reason}

    def message(self) -> str:
        """One line for stderr, naming the server and the id (sanitized, not markup)."""
        if self.uuid is None:
            return f"skipped server {quoted(self.server)} from the panel's listing: {self.reason}"
        return (
            f"server {visible(self.server)}: skipped backup {quoted(self.uuid)} from the panel's "
            f"listing: {self.reason}"
        )


def usable_backups(server: str, backups: Iterable[Backup]) -> tuple[list[Backup], list[Rejected]]:
    """Split a listing into backups the SDK can download and entries it would refuse.

    The SDK validates every UUID before any request (one bad id would fail a whole batch),
    so the same check runs here, per entry. A UUID listed twice is kept once.
    """
    usable: dict[str, Backup] = {}
    rejected: list[Rejected] = []
    for backup in backups:
        try:
            check_backup_uuid(backup.uuid)
        except InvalidArgumentError:
            rejected.append(Rejected(server, backup.uuid, "invalid backup UUID"))
        else:
            usable.setdefault(backup.uuid, backup)
    return list(usable.values()), rejected


def label_for(backup: Backup | str, server: str | None = None) -> str:
    """A short label for a progress bar: the server and the backup's name (or UUID)."""
    name = backup.name if isinstance(backup, Backup) else backup[:8]
    return f"{server} {name}" if server else name


async def transfer(
    client: PteroClient,
    view: TransferProgress,
    server: str,
    targets: Sequence[Backup | str],
    dest: pathlib.Path,
    *,
    concurrency: int,
    overwrite: bool,
    verify: bool = True,
    min_rate: float | None = DEFAULT_MIN_RATE,
) -> list[DownloadOutcome]:
    """Download ``targets`` of one server into ``dest`` with ``download_many``, showing bars."""
    for target in targets:
        uuid = target.uuid if isinstance(target, Backup) else target
        size = target.bytes if isinstance(target, Backup) else None
        view.expect(uuid, label_for(target), size)
    outcomes = await client.download_many(
        [(server, target) for target in targets],
        dest,
        concurrency=concurrency,
        verify=verify,
        overwrite=overwrite,
        progress=view.update,
        min_rate=min_rate,
    )
    view.settle(outcomes)
    return outcomes


def write_json_atomic(path: pathlib.Path, doc: Any) -> None:
    """Write JSON to ``path`` atomically: a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json_text(doc) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass
class ServerSync:
    """The mirror of one server: its completed backups and what happened to each."""

    server: str
    directory: pathlib.Path
    backups: list[Backup]
    #: Completed backups of the listing that could not be synced (an unusable UUID).
    rejected: list[Rejected] = field(default_factory=list)
    outcomes: list[DownloadOutcome] = field(default_factory=list)

    @property
    def manifest(self) -> pathlib.Path:
        """Where the manifest is written."""
        return self.directory / MANIFEST

    def manifest_doc(self) -> dict[str, Any]:
        """The manifest: every backup that is now on disk and verified (``backups``), and
        every completed backup of the listing left out for an unusable id (``rejected``)."""
        present = {o.backup_uuid for o in self.outcomes if o.result is not None}
        return {
            "backups": [
                {
                    "uuid": b.uuid,
                    "name": b.name,
                    "bytes": b.bytes,
                    "checksum": checksum_text(b),
                    "created_at": b.created_at.isoformat(),
                }
                for b in sorted(self.backups, key=lambda b: b.created_at)
                if b.uuid in present
            ],
            "rejected": [{"uuid": r.uuid, "reason": r.reason} for r in self.rejected],
        }


@dataclass
class SyncReport:
    """What a sync did, over all servers."""

    dest: pathlib.Path
    servers: list[ServerSync]
    seconds: float = 0.0
    #: Servers of the listing that could not be synced at all (an unusable id).
    rejected_servers: list[Rejected] = field(default_factory=list)

    @property
    def rejected(self) -> list[Rejected]:
        """Every entry left out: servers first, then backups, server by server."""
        return [*self.rejected_servers, *(r for s in self.servers for r in s.rejected)]

    @property
    def outcomes(self) -> list[DownloadOutcome]:
        """Every outcome, server by server."""
        return [o for s in self.servers for o in s.outcomes]

    @property
    def downloaded(self) -> int:
        """Files fetched in this run."""
        return sum(1 for o in self.outcomes if o.result is not None and not o.result.skipped)

    @property
    def skipped(self) -> int:
        """Files already there and verified."""
        return sum(1 for o in self.outcomes if o.result is not None and o.result.skipped)

    @property
    def failed(self) -> int:
        """Files that could not be fetched."""
        return sum(1 for o in self.outcomes if o.result is None)

    @property
    def bytes(self) -> int:
        """Bytes fetched in this run."""
        return sum(
            o.result.bytes for o in self.outcomes if o.result is not None and not o.result.skipped
        )

    @property
    def total_bytes(self) -> int:
        """Bytes of every file now in the mirror."""
        return sum(o.result.bytes for o in self.outcomes if o.result is not None)


async def sync_servers(
    client: PteroClient,
    view: TransferProgress,
    servers: Sequence[str],
    dest: pathlib.Path,
    *,
    concurrency: int,
    min_rate: float | None = DEFAULT_MIN_RATE,
) -> SyncReport:
    """Mirror every completed backup of ``servers`` into ``dest/<server>/<uuid>.tar.gz``.

    Files already there and verified are skipped by the SDK without asking for a link; a file
    that does not match is fetched again. Each server's manifest is written atomically.
    A server id or backup UUID the SDK would refuse (``servers`` may come from the panel's
    listing) is left out and recorded in ``SyncReport.rejected``; everything else is synced.
    """
    started = time.monotonic()
    report = SyncReport(dest=dest, servers=[])
    for server in dict.fromkeys(servers):  # list everything first: the total bar knows the job
        try:
            # Also keeps the directory name a plain id: no "../" can reach the file system.
            check_server_id(server)
        except InvalidArgumentError:
            report.rejected_servers.append(Rejected(server, None, "invalid server id"))
            continue
        listed = [b async for b in client.backups(server).list()]
        completed, rejected = usable_backups(
            server, (b for b in listed if b.state is BackupState.COMPLETED)
        )
        report.servers.append(ServerSync(server, dest / server, completed, rejected))
        for backup in completed:
            view.expect(backup.uuid, label_for(backup, server), backup.bytes)
    # One call for every server, so that the concurrency limit spans them all.
    targets = [
        (entry.server, backup, entry.directory / f"{backup.uuid}.tar.gz")
        for entry in report.servers
        for backup in entry.backups
    ]
    outcomes = await client.download_many(
        targets,
        dest,
        concurrency=concurrency,
        overwrite=True,  # a damaged local copy is replaced by a verified one
        progress=view.update,
        min_rate=min_rate,
    )
    view.settle(outcomes)
    remaining = iter(outcomes)
    for entry in report.servers:
        entry.outcomes = [next(remaining) for _ in entry.backups]
        await anyio.to_thread.run_sync(write_json_atomic, entry.manifest, entry.manifest_doc())
    report.seconds = time.monotonic() - started
    return report
