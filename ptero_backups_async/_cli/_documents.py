"""The JSON documents the command line prints with ``--json``, and the sync's manifests.

Values are exact (what the panel sent); ``json_text()`` writes them terminal-safe.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

from .._errors import DownloadError
from .._models import Backup, BackupCompleted, Event, RestoreCompleted, Server, StatusChanged
from .._outcome import DownloadOutcome
from ._describe import checksum_text, error_head
from ._report import Rejected, ServerSync, SyncReport
from ._text import json_line, json_text

__all__ = [
    "backup_json",
    "downloads_json",
    "emit_json",
    "error_json",
    "failure_json",
    "manifest_json",
    "outcome_json",
    "rejected_json",
    "server_json",
    "sync_json",
]


def emit_json(doc: Any, file: IO[str] | None = None) -> None:
    """Write one JSON document (and a newline) to stdout."""
    out = file or sys.stdout
    out.write(json_text(doc) + "\n")
    out.flush()


def print_json_line(doc: Any, file: IO[str] | None = None) -> None:
    """Write one JSON document on one line to stdout, flushed (a stream of documents)."""
    out = file or sys.stdout
    out.write(json_line(doc) + "\n")
    out.flush()


def event_json(event: Event) -> dict[str, Any]:
    """A node event as the JSON line ``ptero-backups events`` prints."""
    doc: dict[str, Any] = {"server": event.server}
    if isinstance(event, BackupCompleted):
        doc.update(
            event="backup completed",
            backup_uuid=event.backup_uuid,
            is_successful=event.is_successful,
            checksum=str(event.checksum) if event.checksum else None,
            bytes=event.bytes,
        )
    elif isinstance(event, RestoreCompleted):
        doc["event"] = "backup restore completed"
    elif isinstance(event, StatusChanged):
        doc.update(event="status", state=event.state)
    else:
        doc.update(event=event.name, args=list(event.args))
    return doc


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def backup_json(backup: Backup) -> dict[str, Any]:
    """A backup as the JSON the CLI prints."""
    return {
        "uuid": backup.uuid,
        "name": backup.name,
        "state": backup.state.value,
        "bytes": backup.bytes,
        "is_locked": backup.is_locked,
        "checksum": checksum_text(backup),
        "created_at": _iso(backup.created_at),
        "completed_at": _iso(backup.completed_at),
    }


def server_json(server: Server) -> dict[str, Any]:
    """A server as the JSON the CLI prints."""
    return {
        "identifier": server.identifier,
        "uuid": server.uuid,
        "name": server.name,
        "status": server.status,
    }


def error_json(exc: BaseException) -> dict[str, Any]:
    """An error as JSON: its class and message."""
    doc: dict[str, Any] = {"type": type(exc).__name__, "message": error_head(exc)}
    if isinstance(exc, DownloadError):
        doc["attempts"] = exc.attempts
        doc["history"] = list(exc.history)
    return doc


def failure_json(exc: BaseException) -> dict[str, Any]:
    """The JSON document printed on stdout when a command fails with ``--json``."""
    return {"error": error_json(exc)}


def rejected_json(entry: Rejected) -> dict[str, Any]:
    """An entry of the panel's listing left out, as JSON (exact values)."""
    return {"server": entry.server, "uuid": entry.uuid, "reason": entry.reason}


def outcome_json(outcome: DownloadOutcome) -> dict[str, Any]:
    """One download's outcome as JSON."""
    result, error = outcome.result, outcome.error
    return {
        "server": outcome.server,
        "uuid": outcome.backup_uuid,
        "path": str(result.path) if result else None,
        "bytes": result.bytes if result else None,
        "checksum": str(result.checksum) if result else None,
        "verified": result.verified if result else False,
        "skipped": result.skipped if result else False,
        "attempts": result.attempts if result else getattr(error, "attempts", None),
        "segments": result.segments if result else None,
        "resumed_from": result.resumed_from if result else None,
        "error": error_json(error) if error is not None else None,
    }


def downloads_json(
    outcomes: Sequence[DownloadOutcome],
    dest: pathlib.Path,
    seconds: float,
    rejected: Sequence[Rejected],
) -> dict[str, Any]:
    """What ``download`` did: counts, bytes, time and one result per backup."""
    fetched = [o.result for o in outcomes if o.result is not None and not o.result.skipped]
    return {
        "dest": str(dest),
        "downloaded": len(fetched),
        "skipped": sum(1 for o in outcomes if o.result is not None and o.result.skipped),
        "failed": sum(1 for o in outcomes if o.result is None),
        "rejected": [rejected_json(r) for r in rejected],
        "bytes": sum(r.bytes for r in fetched),
        "seconds": round(seconds, 3),
        "results": [outcome_json(o) for o in outcomes],
    }


def manifest_json(entry: ServerSync) -> dict[str, Any]:
    """A server's manifest: the backups on disk and verified, and the ones left out.

    ``backups`` lists every backup now on disk and verified; ``rejected`` every completed
    backup of the listing left out for an unusable id.
    """
    present = {o.backup_uuid for o in entry.outcomes if o.result is not None}
    return {
        "backups": [
            {
                "uuid": b.uuid,
                "name": b.name,
                "bytes": b.bytes,
                "checksum": checksum_text(b),
                "created_at": b.created_at.isoformat(),
            }
            for b in sorted(entry.backups, key=lambda b: b.created_at)
            if b.uuid in present
        ],
        "rejected": [{"uuid": r.uuid, "reason": r.reason} for r in entry.rejected],
    }


def sync_json(report: SyncReport) -> dict[str, Any]:
    """A sync report as JSON; ``rejected`` lists the entries of the panel's listings left out."""
    return {
        "dest": str(report.dest),
        "downloaded": report.downloaded,
        "skipped": report.skipped,
        "failed": report.failed,
        "rejected": [rejected_json(r) for r in report.rejected],
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
        "bytes_per_second": round(report.bytes / report.seconds) if report.seconds > 0 else None,
        "shard": None
        if report.shard is None
        else {"index": report.shard.index, "count": report.shard.count},
        "elsewhere": report.elsewhere,
        "servers": [
            {
                "server": entry.server,
                "directory": str(entry.directory),
                "manifest": str(entry.manifest),
                "files": [outcome_json(o) for o in entry.outcomes],
            }
            for entry in report.servers
        ],
    }
