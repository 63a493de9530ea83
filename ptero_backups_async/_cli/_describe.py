"""Short words for models and errors: checksums, error lines, a backup, a rejected entry.

The results are sanitized text (through ``visible()`` where they hold panel text), not markup:
pass them through ``safe_markup()`` before printing them as markup.
"""

from __future__ import annotations

from .._errors import DownloadError
from .._models import Backup, BackupState
from ._report import Rejected
from ._text import quoted, visible
from ._units import human_age, human_size

__all__ = [
    "checksum_text",
    "describe_backup",
    "error_brief",
    "error_head",
    "error_line",
    "rejected_line",
    "short_checksum",
]


def checksum_text(backup: Backup) -> str | None:
    """The checksum as ``algo:hex``, or what the panel sent when the SDK could not parse it."""
    return str(backup.checksum) if backup.checksum is not None else backup.checksum_raw


def short_checksum(text: str | None) -> str | None:
    """``sha1:5556c602526b…`` — enough to tell archives apart at a glance."""
    if text is None or len(text) <= 22:
        return text
    return text[:13] + "…"


def error_line(exc: BaseException) -> str:
    """An error as one line (a ``DownloadError``'s attempt history joined with ``;``)."""
    text = str(exc) or type(exc).__name__
    return "; ".join(" ".join(part.split()) for part in text.splitlines() if part.strip())


def error_head(exc: BaseException) -> str:
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
    return " ".join(error_head(exc).split())


def describe_backup(backup: Backup) -> str:
    """``'nightly' (uuid, 1.5 GiB, 3 h ago)`` for prompts and messages (sanitized, not markup)."""
    state = backup.state
    size = human_size(backup.bytes) if state is BackupState.COMPLETED else state.value
    return f"{quoted(backup.name)} ({visible(backup.uuid)}, {size}, {human_age(backup.created_at)})"


def rejected_line(entry: Rejected) -> str:
    """One line for stderr naming the rejected server or backup (sanitized, not markup)."""
    if entry.uuid is None:
        return f"skipped server {quoted(entry.server)} from the panel's listing: {entry.reason}"
    return (
        f"server {visible(entry.server)}: skipped backup {quoted(entry.uuid)} from the panel's "
        f"listing: {entry.reason}"
    )
