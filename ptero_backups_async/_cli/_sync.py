"""Downloads shared by ``download``, ``sync`` and ``demo``: batches, mirrors and manifests."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from .._client import PteroClient
from .._models import Backup, BackupState, DownloadOutcome
from ._render import TransferProgress, checksum_text

__all__ = [
    "MANIFEST",
    "ServerSync",
    "SyncReport",
    "label_for",
    "sync_servers",
    "transfer",
    "write_json_atomic",
]

MANIFEST = "manifest.json"


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
    )
    view.settle(outcomes)
    return outcomes


def write_json_atomic(path: pathlib.Path, doc: Any) -> None:
    """Write JSON to ``path`` atomically: a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
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
    outcomes: list[DownloadOutcome] = field(default_factory=list)

    @property
    def manifest(self) -> pathlib.Path:
        """Where the manifest is written."""
        return self.directory / MANIFEST

    def manifest_doc(self) -> list[dict[str, Any]]:
        """The manifest: every backup that is now on disk and verified."""
        present = {o.backup_uuid for o in self.outcomes if o.result is not None}
        return [
            {
                "uuid": b.uuid,
                "name": b.name,
                "bytes": b.bytes,
                "checksum": checksum_text(b),
                "created_at": b.created_at.isoformat(),
            }
            for b in sorted(self.backups, key=lambda b: b.created_at)
            if b.uuid in present
        ]


@dataclass
class SyncReport:
    """What a sync did, over all servers."""

    dest: pathlib.Path
    servers: list[ServerSync]
    seconds: float = 0.0

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
) -> SyncReport:
    """Mirror every completed backup of ``servers`` into ``dest/<server>/<uuid>.tar.gz``.

    Files already there and verified are skipped by the SDK without asking for a link; a file
    that does not match is fetched again. Each server's manifest is written atomically.
    """
    started = time.monotonic()
    report = SyncReport(dest=dest, servers=[])
    for server in servers:  # list everything first, so the total bar knows the whole job
        backups = [b async for b in client.backups(server).list()]
        completed = [b for b in backups if b.state is BackupState.COMPLETED]
        report.servers.append(ServerSync(server, dest / server, completed))
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
    )
    view.settle(outcomes)
    remaining = iter(outcomes)
    for entry in report.servers:
        entry.outcomes = [next(remaining) for _ in entry.backups]
        await anyio.to_thread.run_sync(write_json_atomic, entry.manifest, entry.manifest_doc())
    report.seconds = time.monotonic() - started
    return report
