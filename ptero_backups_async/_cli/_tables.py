"""Tables for the terminal (servers, backups, download results, a sync) and the sync's summary.

Panel text goes into cells through ``plain()``: sanitized and never read as markup.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from rich.table import Column, Table
from rich.text import Text

from .._models import Backup, BackupState, Server
from .._outcome import DownloadOutcome
from ._describe import checksum_text, error_brief, short_checksum
from ._report import SyncReport
from ._text import plain
from ._units import human_age, human_duration, human_rate, human_size

__all__ = [
    "FULL_CHECKSUM_WIDTH",
    "backups_table",
    "outcomes_table",
    "servers_table",
    "sync_summary",
    "sync_table",
]

#: Terminals at least this wide get whole checksums in backup tables.
FULL_CHECKSUM_WIDTH = 150

_STATE_STYLE = {
    BackupState.COMPLETED: "green",
    BackupState.CREATING: "yellow",
    BackupState.FAILED: "red",
}


def servers_table(servers: Iterable[Server]) -> Table:
    """The servers as a table."""
    table = Table("identifier", "uuid", "name", "status", title="Servers", title_justify="left")
    for server in servers:
        table.add_row(
            plain(server.identifier),
            plain(server.uuid),
            plain(server.name),
            plain(server.status or "—", style="yellow" if server.status else "dim"),
        )
    return table


def backups_table(
    backups: Sequence[Backup],
    title: str | None = None,
    now: datetime | None = None,
    *,
    full_checksums: bool = True,
) -> Table:
    """Backups as a table, oldest first: uuid, name, state, size, locked, age, checksum.

    ``full_checksums=False`` shortens them so that a row fits an 80-120 column terminal
    (``--json`` always has them whole).
    """
    now = now or datetime.now(timezone.utc)
    table = Table(
        Column("uuid", no_wrap=True),
        Column("name", overflow="fold", min_width=8),
        "state",
        Column("size", justify="right", no_wrap=True),
        "locked",
        Column("age", no_wrap=True),
        Column("checksum", no_wrap=True, overflow="ellipsis"),
        title=title,
        title_justify="left",
    )
    for backup in sorted(backups, key=lambda b: b.created_at):
        state = backup.state
        checksum = checksum_text(backup)
        if checksum is not None and not full_checksums:
            checksum = short_checksum(checksum)
        table.add_row(
            plain(backup.uuid),
            plain(backup.name),
            Text(state.value, style=_STATE_STYLE[state]),
            human_size(backup.bytes) if state is BackupState.COMPLETED else "—",
            Text("locked", style="cyan") if backup.is_locked else "",
            human_age(backup.created_at, now),
            plain(checksum) if checksum is not None else Text("—", style="dim"),
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
    *,
    full_checksums: bool = True,
) -> Table:
    """Download results: file (relative to ``base``), size, checksum, and what happened.

    What happened is verified, skipped (already there and verified), not verified, or the error.
    """
    table = Table(
        Column("file", no_wrap=True, overflow="ellipsis"),
        Column("size", justify="right", no_wrap=True),
        Column("checksum", overflow="fold"),
        Column("result", overflow="fold", min_width=12),
        title=title,
        title_justify="left",
    )
    for outcome in outcomes:
        result, error = outcome.result, outcome.error
        if result is None:
            message = error_brief(error) if error is not None else "no result"
            table.add_row(
                plain(f"{outcome.backup_uuid}.tar.gz"),
                "—",
                "—",
                plain(f"error: {message}", style="red"),
            )
            continue
        if result.skipped:
            status = Text("skipped: already there, verified", style="dim green")
        elif result.verified:
            status = Text("verified", style="green")
        else:
            status = Text("downloaded, NOT verified", style="yellow")
        if result.attempts > 1:
            status.append(f" ({result.attempts} attempts)", style="dim")
        checksum = str(result.checksum)
        table.add_row(
            plain(_display_path(result.path, base)),
            human_size(result.bytes),
            plain(checksum if full_checksums else short_checksum(checksum)),
            status,
        )
    return table


def sync_table(report: SyncReport) -> Table:
    """One row per server: where its mirror is and what this run did.

    A ``rejected`` column (listed backups left out for an unusable UUID) shows when any were.
    """
    show_rejected = any(entry.rejected for entry in report.servers)
    table = Table(
        Column("server", no_wrap=True),
        Column("directory", overflow="fold"),
        Column("files", justify="right"),
        Column("downloaded", justify="right"),
        Column("skipped", justify="right"),
        Column("failed", justify="right"),
        *([Column("rejected", justify="right")] if show_rejected else []),
        Column("size", justify="right", no_wrap=True),
        title="Sync",
        title_justify="left",
    )
    for entry in report.servers:
        ok = [o.result for o in entry.outcomes if o.result is not None]
        failed = sum(1 for o in entry.outcomes if o.result is None)
        rejected = len(entry.rejected)
        table.add_row(
            plain(entry.server),
            plain(str(entry.directory)),
            str(len(ok)),
            str(sum(1 for r in ok if not r.skipped)),
            str(sum(1 for r in ok if r.skipped)),
            Text(str(failed), style="red") if failed else "0",
            *([Text(str(rejected), style="red") if rejected else "0"] if show_rejected else []),
            human_size(sum(r.bytes for r in ok)),
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
    return text
