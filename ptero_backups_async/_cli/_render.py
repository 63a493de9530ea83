"""Everything the command line shows: human units, JSON documents, tables and progress bars.

Whatever the panel sends (names, ids, checksums, error texts) is shown through ``visible()``,
the one sanitizer: a terminal never receives a control sequence from the panel, and rich never
reads panel text as markup (``safe_markup()`` for markup strings, ``plain()`` for cells).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from .._errors import DownloadError
from .._models import Backup, BackupState, DownloadOutcome, DownloadProgress, Server

if TYPE_CHECKING:
    from ._sync import SyncReport

__all__ = [
    "FULL_CHECKSUM_WIDTH",
    "TransferProgress",
    "backup_json",
    "backups_table",
    "checksum_text",
    "consoles",
    "describe_backup",
    "emit_json",
    "error_brief",
    "error_json",
    "error_line",
    "failure_json",
    "heading",
    "human_age",
    "human_duration",
    "human_rate",
    "human_size",
    "json_text",
    "outcome_json",
    "outcomes_table",
    "plain",
    "quoted",
    "safe_markup",
    "server_json",
    "servers_table",
    "short_checksum",
    "spinner",
    "sync_json",
    "sync_summary",
    "sync_table",
    "visible",
]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
#: Width of tables when stdout is not a terminal (a file or a pipe): wide enough for UUIDs
#: and checksums side by side, so each row stays on one line.
PIPE_WIDTH = 200
LABEL_WIDTH = 30
#: What the columns after the bar take (bytes, speed, ETA, gaps), plus room for a "^C".
_FIXED_COLUMNS = 21 + 12 + 7 + 4 + 6


# ---------------------------------------------------------------------- panel text

#: Unicode categories a terminal must not receive raw: controls (C0, DEL, C1: escape
#: sequences), format characters (bidirectional overrides, zero-width characters), lone
#: surrogates (they cannot even be encoded) and the line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
#: json.dumps already escapes C0 inside strings, and a raw C0 outside them is layout.
_NON_ASCII = re.compile(r"[^\x00-\x7e]")


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _python_escape(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: object) -> str:
    """``text`` with every control, format and separator character shown as an escape.

    ``"\\x1b]0;pwned\\x07"`` comes out as the characters ``\\x1b]0;pwned\\x07``; a
    right-to-left override as ``\\u202e``. Every panel-supplied string the command line prints
    goes through here (JSON output keeps the exact value: see ``json_text``).
    """
    s = text if isinstance(text, str) else str(text)
    if s.isascii() and s.isprintable():
        return s
    return _NOT_PRINTABLE_ASCII.sub(lambda m: _python_escape(m[0]) if _unsafe(m[0]) else m[0], s)


def safe_markup(text: object) -> str:
    """Panel text for a rich markup string: sanitized and with its ``[tags]`` escaped."""
    return escape(visible(text))


def plain(text: object, style: str = "") -> Text:
    """Panel text as a rich ``Text`` cell: sanitized, never read as markup."""
    return Text(visible(text), style=style)


def quoted(text: object) -> str:
    """``'name'``, sanitized (for messages: where a name starts and ends)."""
    return f"'{visible(text)}'"


def _json_escape(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:  # JSON spells it as a UTF-16 surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def json_text(doc: Any) -> str:
    """``doc`` as indented JSON, readable (UTF-8) yet safe on a terminal.

    The characters ``visible()`` escapes are written as ``\\uXXXX``: the same JSON value,
    but no raw C1 control, bidirectional override or lone surrogate in the output.
    """
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    return _NON_ASCII.sub(lambda m: _json_escape(m[0]) if _unsafe(m[0]) else m[0], text)


# ---------------------------------------------------------------------- units


def human_size(n: float | None) -> str:
    """Bytes in binary units: ``1536`` → ``1.5 KiB``; None → ``—``."""
    if n is None:
        return "—"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(n_bytes: float, seconds: float) -> str:
    """A throughput: ``12.3 MiB/s`` (``—`` when no time passed)."""
    if seconds <= 0:
        return "—"
    return f"{human_size(n_bytes / seconds)}/s"


def human_duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 4 s``, ``2 h 5 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def human_age(when: datetime, now: datetime | None = None) -> str:
    """How long ago: ``just now``, ``42 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    now = now or datetime.now(timezone.utc)
    seconds = (now - when).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 86400 * 60:
        return f"{int(seconds // 86400)} d ago"
    return when.strftime("%Y-%m-%d")


def checksum_text(backup: Backup) -> str | None:
    """The checksum as ``algo:hex``, or what the panel sent when the SDK could not parse it."""
    return str(backup.checksum) if backup.checksum is not None else backup.checksum_raw


def error_line(exc: BaseException) -> str:
    """An error as one line (a ``DownloadError``'s attempt history joined with ``;``)."""
    text = str(exc) or type(exc).__name__
    return "; ".join(" ".join(part.split()) for part in text.splitlines() if part.strip())


def _error_head(exc: BaseException) -> str:
    """The first line of an error (a download's includes its attempts)."""
    head = (str(exc) or type(exc).__name__).splitlines()[0]
    if isinstance(exc, DownloadError) and exc.attempts:
        head += f" ({exc.attempts} attempt{'s' if exc.attempts != 1 else ''})"
    return head


def error_brief(exc: BaseException) -> str:
    """A short reason for a results table: a failed download's last attempt, and how many."""
    if isinstance(exc, DownloadError) and exc.history:
        n = len(exc.history)
        return f"{exc.history[-1]} ({n} attempt{'s' if n != 1 else ''})"
    return " ".join(_error_head(exc).split())


# ---------------------------------------------------------------------- JSON


def emit_json(doc: Any, file: IO[str] | None = None) -> None:
    """Write one JSON document (and a newline) to stdout."""
    out = file or sys.stdout
    out.write(json_text(doc) + "\n")
    out.flush()


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
    doc: dict[str, Any] = {"type": type(exc).__name__, "message": _error_head(exc)}
    if isinstance(exc, DownloadError):
        doc["attempts"] = exc.attempts
        doc["history"] = list(exc.history)
    return doc


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
        "error": error_json(error) if error is not None else None,
    }


# ---------------------------------------------------------------------- consoles and tables


#: Terminals at least this wide get whole checksums in backup tables.
FULL_CHECKSUM_WIDTH = 150


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles; wide and colourless when not writing to a terminal."""
    # emoji=False: a name like ":warning:" is shown as written (markup is escaped separately).
    out = Console(file=sys.stdout, highlight=False, emoji=False)
    if not out.is_terminal:
        out = Console(file=sys.stdout, highlight=False, emoji=False, width=PIPE_WIDTH)
    err = Console(file=sys.stderr, highlight=False, emoji=False)
    if not err.is_terminal:
        err = Console(file=sys.stderr, highlight=False, emoji=False, width=PIPE_WIDTH)
    return out, err


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


def short_checksum(text: str | None) -> str | None:
    """``sha1:5556c602526b…`` — enough to tell archives apart at a glance."""
    if text is None or len(text) <= 22:
        return text
    return text[:13] + "…"


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
    """Download results: file (relative to ``base``), size, checksum and verified / skipped /
    error."""
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


def heading(console: Console, text: str) -> None:
    """A section heading."""
    console.print()
    if console.is_terminal:
        console.rule(f"[bold]{safe_markup(text)}", align="left")
    else:
        console.print(f"== {safe_markup(text)} ==", style="bold")


# ---------------------------------------------------------------------- progress


class _BytesColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        """``12.0 MiB / 40.0 MiB``."""
        total = human_size(task.total) if task.total is not None else "?"
        return Text(f"{human_size(task.completed)} / {total}", style="progress.download")


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        """``38.0 MiB/s`` in binary units, like the sizes."""
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{human_size(speed)}/s", style="progress.data.speed")


class TransferProgress:
    """Live bars on stderr: one per active download plus a total (bytes, speed, ETA).

    Does nothing when disabled or when stderr is not a terminal. ``update`` is the
    ``progress`` callback for the SDK; ``settle`` takes the outcomes of a batch.
    """

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.enabled = enabled and console.is_terminal
        self._progress = Progress(
            TextColumn(
                "{task.description}",
                table_column=Column(width=LABEL_WIDTH, no_wrap=True, overflow="ellipsis"),
            ),
            # Short of the full width on purpose: a "^C" echoed by the terminal after a full
            # line would wrap, and the transient display would then leave a line behind.
            BarColumn(bar_width=max(10, console.width - LABEL_WIDTH - _FIXED_COLUMNS)),
            _BytesColumn(table_column=Column(min_width=21, justify="right")),
            _SpeedColumn(table_column=Column(min_width=12, justify="right")),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            disable=not self.enabled,
        )
        self._total: TaskID | None = None
        self._bars: dict[str, TaskID] = {}
        self._labels: dict[str, str] = {}
        self._sizes: dict[str, int | None] = {}
        self._done: dict[str, int] = {}
        self._finished: set[str] = set()

    def __enter__(self) -> TransferProgress:
        if self.enabled:
            self._progress.start()
            self._total = self._progress.add_task("[bold]total", total=0)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The display is best effort: a terminal that went away (SIGHUP) must not turn a
        # cancellation or a result into an OSError.
        with contextlib.suppress(OSError):
            self._progress.stop()

    def expect(self, uuid: str, label: str, size: int | None) -> None:
        """Announce a download, so that the total bar counts it from the start."""
        self._labels[uuid] = label
        self._sizes[uuid] = size or None
        self._refresh_total()

    def update(self, event: DownloadProgress) -> None:
        """The SDK's progress callback."""
        uuid = event.backup_uuid
        if self._sizes.get(uuid) is None and event.bytes_total:
            self._sizes[uuid] = event.bytes_total
        size = self._sizes.get(uuid)
        self._done[uuid] = event.bytes_done
        finished = size is not None and event.bytes_done >= size
        if finished:
            self._finished.add(uuid)
        else:
            self._finished.discard(uuid)
        if not self.enabled:
            return
        bar = self._bars.get(uuid)
        if finished:
            if bar is not None:
                self._progress.remove_task(self._bars.pop(uuid))
        elif bar is None:
            label = self._labels.get(uuid, uuid[:8])
            self._bars[uuid] = self._progress.add_task(
                safe_markup(label), total=size, completed=event.bytes_done
            )
        else:
            self._progress.update(bar, total=size, completed=event.bytes_done)
        self._refresh_total()

    def settle(self, outcomes: Iterable[DownloadOutcome]) -> None:
        """Account for finished downloads: skipped ones leave the total, failed ones stop."""
        for outcome in outcomes:
            uuid = outcome.backup_uuid
            if outcome.result is not None and outcome.result.skipped:
                self._sizes.pop(uuid, None)
                self._done.pop(uuid, None)
            else:
                done = self._done.get(uuid, 0)
                self._sizes[uuid] = done if outcome.result is None else outcome.result.bytes
                self._done[uuid] = self._sizes[uuid] or 0
                self._finished.add(uuid)
            if uuid in self._bars and self.enabled:
                self._progress.remove_task(self._bars.pop(uuid))
        self._refresh_total()

    def _refresh_total(self) -> None:
        if self._total is None:
            return
        total = sum(size or 0 for size in self._sizes.values())
        done = sum(self._done.get(uuid, 0) for uuid in self._sizes)
        files = len(self._sizes)
        finished = len(self._finished & self._sizes.keys())
        self._progress.update(
            self._total,
            total=total,
            completed=min(done, total),
            description=f"[bold]total[/] {finished}/{files} files",
        )


def spinner(console: Console, text: str) -> Progress:
    """A transient spinner with elapsed time, for waits (disabled off a terminal)."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
        disable=not console.is_terminal,
    )
    progress.add_task(safe_markup(text), total=None)
    return progress


def describe_backup(backup: Backup) -> str:
    """``'nightly' (uuid, 1.5 GiB, 3 h ago)`` for prompts and messages (sanitized, not markup)."""
    state = backup.state
    size = human_size(backup.bytes) if state is BackupState.COMPLETED else state.value
    return f"{quoted(backup.name)} ({visible(backup.uuid)}, {size}, {human_age(backup.created_at)})"


def failure_json(exc: BaseException) -> dict[str, Any]:
    """The JSON document printed on stdout when a command fails with ``--json``."""
    return {"error": error_json(exc)}


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


def sync_json(report: SyncReport) -> dict[str, Any]:
    """A sync report as JSON; ``rejected`` lists the entries of the panel's listings left out."""
    return {
        "dest": str(report.dest),
        "downloaded": report.downloaded,
        "skipped": report.skipped,
        "failed": report.failed,
        "rejected": [r.json() for r in report.rejected],
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
        "bytes_per_second": round(report.bytes / report.seconds) if report.seconds > 0 else None,
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
