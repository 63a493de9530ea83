"""Downloads shared by ``download``, ``sync`` and ``demo``: batches, mirrors and manifests.

They report to a ``TransferView`` (a protocol), not to a display: ``_progress.TransferProgress``
is the rich one.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import anyio

from .._client import PteroClient
from .._download import DEFAULT_MIN_RATE, Segments
from .._errors import InvalidArgumentError
from .._models import Backup, BackupState, DownloadProgress
from .._outcome import DownloadOutcome
from .._sansio import check_backup_uuid, check_server_id
from ._documents import manifest_json
from ._report import Rejected, ServerSync, SyncReport
from ._shard import Shard
from ._text import json_text

__all__ = [
    "TransferView",
    "label_for",
    "sync_servers",
    "transfer",
    "usable_backups",
    "write_json_atomic",
]


class TransferView(Protocol):
    """What a batch of downloads reports to: the downloads ahead, their bytes, their ends."""

    def expect(self, uuid: str, label: str, size: int | None) -> None:
        """A download is coming: its backup, a short label, its size if known."""

    def update(self, event: DownloadProgress) -> None:
        """The SDK's ``progress`` callback, called from the event loop."""

    def settle(self, outcomes: Iterable[DownloadOutcome]) -> None:
        """These downloads are over (verified, skipped or failed)."""


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
    view: TransferView,
    server: str,
    targets: Sequence[Backup | str],
    dest: pathlib.Path,
    *,
    concurrency: int,
    overwrite: bool,
    verify: bool = True,
    min_rate: float | None = DEFAULT_MIN_RATE,
    segments: Segments = "auto",
) -> list[DownloadOutcome]:
    """Download ``targets`` of one server into ``dest``, reporting to ``view``."""
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
        segments=segments,
    )
    view.settle(outcomes)
    return outcomes


def write_json_atomic(path: pathlib.Path, doc: Any) -> None:
    """Write JSON to ``path`` atomically: a temporary file in the same directory, then rename.

    Blocking: from async code, run it in a worker thread.
    """
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


async def sync_servers(
    client: PteroClient,
    view: TransferView,
    servers: Sequence[str],
    dest: pathlib.Path,
    *,
    concurrency: int,
    min_rate: float | None = DEFAULT_MIN_RATE,
    segments: Segments = "auto",
    shard: Shard | None = None,
) -> SyncReport:
    """Mirror every completed backup of ``servers`` into ``dest/<server>/<uuid>.tar.gz``.

    Files already there and verified are skipped by the SDK without asking for a link; a file
    that does not match is fetched again. Each server's manifest is written atomically.
    A server id or backup UUID the SDK would refuse (``servers`` may come from the panel's
    listing) is left out and recorded in ``SyncReport.rejected``; everything else is synced.
    With ``shard``, only the servers of that shard are synced (their backups are not even
    listed); the others are counted in ``SyncReport.elsewhere``.
    """
    started = time.monotonic()
    report = SyncReport(dest=dest, servers=[], shard=shard)
    for server in dict.fromkeys(servers):  # list everything first: the total bar knows the job
        try:
            # Also keeps the directory name a plain id: no "../" can reach the file system.
            check_server_id(server)
        except InvalidArgumentError:
            report.rejected_servers.append(Rejected(server, None, "invalid server id"))
            continue
        if shard is not None and not shard.owns(server):
            report.elsewhere += 1
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
        segments=segments,
    )
    view.settle(outcomes)
    remaining = iter(outcomes)
    for entry in report.servers:
        entry.outcomes = [next(remaining) for _ in entry.backups]
        await anyio.to_thread.run_sync(write_json_atomic, entry.manifest, manifest_json(entry))
    report.seconds = time.monotonic() - started
    return report
