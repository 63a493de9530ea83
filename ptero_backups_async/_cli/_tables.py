"""The tables (servers, backups, download results, a sync) and the sync's summary line.

Each is a ``_layout.FitTable``: print it with ``show()``. On a terminal no line is wider than
the terminal; the columns give way in this order as it narrows (the README's order):

- servers: uuid dropped. Always: identifier, name, status.
- backups: checksum shortened, checksum dropped, age dropped, size dropped, uuid shortened to
  its first 8 characters. Always: uuid, name, state, locked.
- download results: checksum shortened, checksum dropped, size dropped, file shown by its name
  only. Always: file (it holds the backup's UUID), result.
- sync: directory dropped, size dropped, files dropped, skipped dropped. Always: server,
  downloaded, failed, rejected (when any).

Names, paths and errors are cut with an ellipsis (…) first, down to a minimum width. Off a
terminal each table is TSV with fixed columns (see ``*_FIELDS``): exact bytes, ISO 8601
timestamps, ``true``/``false``, and ``-`` where there is no value.

Panel text goes into cells through ``plain()`` and into TSV fields through ``visible()``:
sanitized, never read as markup.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from rich.text import Text

from .._models import Backup, BackupState, Server
from .._outcome import DownloadOutcome
from ._describe import checksum_text, error_brief, short_checksum
from ._layout import Col, Drop, FitTable, Shorten, show
from ._report import SyncReport
from ._text import plain, visible
from ._units import human_age, human_duration, human_rate, human_size

__all__ = [
    "BACKUP_FIELDS",
    "OUTCOME_FIELDS",
    "SERVER_FIELDS",
    "SYNC_FIELDS",
    "backups_table",
    "outcomes_table",
    "servers_table",
    "show",
    "sync_summary",
    "sync_table",
]

#: The TSV columns of each table (stdout not a terminal), the same at every width.
SERVER_FIELDS = ("identifier", "uuid", "name", "status")
BACKUP_FIELDS = ("uuid", "name", "state", "bytes", "is_locked", "created_at", "checksum")
OUTCOME_FIELDS = ("uuid", "result", "bytes", "checksum", "attempts", "path", "error")
SYNC_FIELDS = (
    "server",
    "directory",
    "files",
    "downloaded",
    "skipped",
    "failed",
    "rejected",
    "bytes",
)

#: Cells for values a panel sends: an id or a status of any length is cut, not wrapped.
_UUID = 36
_IDENTIFIER = 16
_STATUS = 18
_CHECKSUM = 72  # sha256:<64 hex>
#: Flexible columns keep at least this many cells before any other column gives way.
_NAME = 18
_PATH = 16
_RESULT = 26  # "downloaded, NOT verified", whole
NONE = "-"

_STATE_STYLE = {
    BackupState.COMPLETED: "green",
    BackupState.CREATING: "yellow",
    BackupState.FAILED: "red",
}


def _field(value: object) -> object:
    """A TSV value: ``true``/``false``, ``-`` for nothing."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def servers_table(servers: Iterable[Server]) -> FitTable:
    """The servers: identifier, uuid, name, status."""
    table = FitTable(
        columns=[
            Col("identifier", "identifier", max_width=_IDENTIFIER),
            Col("uuid", "uuid", max_width=_UUID),
            Col("name", "name", flex=_NAME),
            Col("status", "status", max_width=_STATUS),
        ],
        steps=[Drop("uuid")],
        fields=SERVER_FIELDS,
        title="Servers",
    )
    for server in servers:
        table.add_row(
            {
                "identifier": plain(server.identifier),
                "uuid": plain(server.uuid),
                "name": plain(server.name),
                "status": plain(server.status or "—", style="yellow" if server.status else "dim"),
            },
            map(_field, (server.identifier, server.uuid, server.name, server.status)),
        )
    return table


def backups_table(
    backups: Sequence[Backup],
    title: str | None = None,
    now: datetime | None = None,
) -> FitTable:
    """Backups, oldest first: uuid, name, state, size, locked, age, checksum.

    ``title`` is plain text (it may hold panel text: it is sanitized here).
    """
    now = now or datetime.now(timezone.utc)
    table = FitTable(
        columns=[
            Col("uuid", "uuid", max_width=_UUID),
            Col("name", "name", flex=_NAME),
            Col("state", "state"),
            Col("size", "size", justify="right"),
            Col("locked", "locked"),
            Col("age", "age"),
            Col("checksum", "checksum", max_width=_CHECKSUM),
        ],
        steps=[
            Shorten("checksum"),
            Drop("checksum"),
            Drop("age"),
            Drop("size"),
            Shorten("uuid"),
        ],
        fields=BACKUP_FIELDS,
        title=None if title is None else visible(title),
    )
    for backup in sorted(backups, key=lambda b: b.created_at):
        state = backup.state
        checksum = checksum_text(backup)
        table.add_row(
            {
                "uuid": plain(backup.uuid),
                "name": plain(backup.name),
                "state": Text(state.value, style=_STATE_STYLE[state]),
                "size": human_size(backup.bytes) if state is BackupState.COMPLETED else "—",
                "locked": Text("locked", style="cyan") if backup.is_locked else "",
                "age": human_age(backup.created_at, now),
                "checksum": plain(checksum) if checksum is not None else Text("—", style="dim"),
            },
            map(
                _field,
                (
                    backup.uuid,
                    backup.name,
                    state.value,
                    backup.bytes,
                    backup.is_locked,
                    backup.created_at.isoformat(),
                    checksum,
                ),
            ),
            short={
                "uuid": plain(backup.uuid[:8]),
                "checksum": plain(short_checksum(checksum)) if checksum is not None else "—",
            },
        )
    return table


def _display_path(path: pathlib.Path, base: pathlib.Path | None) -> str:
    if base is not None:
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


def outcomes_table(
    outcomes: Sequence[DownloadOutcome],
    title: str | None = None,
    base: pathlib.Path | None = None,
) -> FitTable:
    """Download results: file (relative to ``base``), size, checksum, and what happened.

    What happened is verified, skipped (already there and verified), not verified, or the error.
    """
    table = FitTable(
        columns=[
            Col("file", "file", cut_start=True),
            Col("size", "size", justify="right"),
            Col("checksum", "checksum", max_width=_CHECKSUM),
            Col("result", "result", flex=_RESULT),
        ],
        steps=[Shorten("checksum"), Drop("checksum"), Drop("size"), Shorten("file")],
        fields=OUTCOME_FIELDS,
        title=None if title is None else visible(title),
    )
    for outcome in outcomes:
        result, error = outcome.result, outcome.error
        if result is None:
            message = error_brief(error) if error is not None else "no result"
            name = f"{outcome.backup_uuid}.tar.gz"
            table.add_row(
                {
                    "file": plain(name),
                    "size": "—",
                    "checksum": "—",
                    "result": plain(f"error: {message}", style="red"),
                },
                map(
                    _field,
                    (
                        outcome.backup_uuid,
                        "failed",
                        None,
                        None,
                        getattr(error, "attempts", None),
                        None,
                        message,
                    ),
                ),
            )
            continue
        if result.skipped:
            status, word = Text("skipped (verified)", style="dim green"), "skipped"
        elif result.verified:
            status, word = Text("verified", style="green"), "verified"
        else:
            status, word = Text("downloaded, NOT verified", style="yellow"), "unverified"
        if result.attempts > 1:
            status.append(f" ({result.attempts} attempts)", style="dim")
        checksum = str(result.checksum)
        table.add_row(
            {
                "file": plain(_display_path(result.path, base)),
                "size": human_size(result.bytes),
                "checksum": plain(checksum),
                "result": status,
            },
            map(
                _field,
                (
                    outcome.backup_uuid,
                    word,
                    result.bytes,
                    checksum,
                    result.attempts,
                    str(result.path),
                    None,
                ),
            ),
            short={"file": plain(result.path.name), "checksum": plain(short_checksum(checksum))},
        )
    return table


def sync_table(report: SyncReport) -> FitTable:
    """One row per server: where its mirror is and what this run did.

    On a terminal the ``rejected`` column (listed backups left out for an unusable UUID) shows
    when any were; the TSV always has it.
    """
    show_rejected = any(entry.rejected for entry in report.servers)
    table = FitTable(
        columns=[
            Col("server", "server", max_width=_IDENTIFIER),
            Col("directory", "directory", flex=_PATH, cut_start=True),
            Col("files", "files", justify="right"),
            Col("downloaded", "downloaded", justify="right"),
            Col("skipped", "skipped", justify="right"),
            Col("failed", "failed", justify="right"),
            *([Col("rejected", "rejected", justify="right")] if show_rejected else []),
            Col("size", "size", justify="right"),
        ],
        steps=[Drop("directory"), Drop("size"), Drop("files"), Drop("skipped")],
        fields=SYNC_FIELDS,
        title="Sync",
    )
    for entry in report.servers:
        ok = [o.result for o in entry.outcomes if o.result is not None]
        failed = sum(1 for o in entry.outcomes if o.result is None)
        rejected = len(entry.rejected)
        downloaded = sum(1 for r in ok if not r.skipped)
        skipped = len(ok) - downloaded
        size = sum(r.bytes for r in ok)
        table.add_row(
            {
                "server": plain(entry.server),
                "directory": plain(str(entry.directory)),
                "files": str(len(ok)),
                "downloaded": str(downloaded),
                "skipped": str(skipped),
                "failed": Text(str(failed), style="red") if failed else "0",
                "rejected": Text(str(rejected), style="red") if rejected else "0",
                "size": human_size(size),
            },
            (entry.server, entry.directory, len(ok), downloaded, skipped, failed, rejected, size),
        )
    return table


def sync_summary(report: SyncReport) -> str:
    """``3 downloaded, 5 skipped, 0 failed · 45.0 MiB in 2.1 s (21.4 MiB/s)`` (rich markup)."""
    failed = f"[red]{report.failed} failed[/]" if report.failed else "0 failed"
    if report.rejected:
        failed += f", [red]{len(report.rejected)} rejected[/] (unusable ids, see below)"
    text = (
        f"[bold]{report.downloaded} downloaded[/], {report.skipped} skipped (already verified), "
        f"{failed} · {human_size(report.bytes)} in {human_duration(report.seconds)}"
    )
    if report.bytes:
        text += f" ({human_rate(report.bytes, report.seconds)})"
    if report.shard is not None:
        servers = len(report.servers)
        text += f" · shard {report.shard}: {servers} of {servers + report.elsewhere} servers"
    return text
