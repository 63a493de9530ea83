"""Every error the SDK raises.

::

    PteroError
    ├── InvalidArgumentError (also a ValueError)   bad input, refused before any request
    ├── APIConnectionError                 network failure talking to the panel
    │   └── APITimeoutError (also a TimeoutError)
    ├── APIStatusError                     .status, .code, .detail, .errors, .method, .url
    │   ├── BadRequestError          400
    │   │   ├── TooManyBackupsError        TooManyBackupsException
    │   │   └── BackupLockedError          BackupLockedException / BackupIsLockedException
    │   ├── AuthenticationError      401
    │   ├── PermissionDeniedError    403
    │   ├── NotFoundError            404
    │   ├── ConflictError            409
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError           429   .retry_after
    │   ├── InsufficientStorageError 507
    │   └── ServerError              5xx
    ├── BackupStateError                   the backup's state does not allow the operation
    │   ├── BackupNotCompletedError
    │   └── BackupFailedError
    ├── UnsupportedOperationError          the panel does not offer the operation (rename)
    ├── ResponseValidationError            the panel answered something that is not its API
    ├── WaitTimeoutError (also a TimeoutError)
    ├── EventsUnavailableError             the node's websocket cannot be had
    ├── DestinationExistsError (also a FileExistsError)
    └── DownloadError                      .attempts, .history
        └── ChecksumMismatchError          .expected, .actual

Every message is bounded (``MAX_MESSAGE`` characters): whatever a panel or link host sends, an
error never carries more than a few KB of text, and says how much it left out. The full data
stays on the exception's attributes (``.errors``, ``.history``).

A 400 whose ``code`` is ``BackupNotCompletedException`` or ``BackupFailedException`` is raised
as a class that is both a ``BadRequestError`` and the matching ``BackupStateError``.
Library internals (aiohttp, JSON, cattrs) never escape raw: they are the ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import Backup, Checksum, ErrorDetail

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BackupFailedError",
    "BackupLockedError",
    "BackupNotCompletedError",
    "BackupStateError",
    "BadRequestError",
    "ChecksumMismatchError",
    "ConflictError",
    "DestinationExistsError",
    "DownloadError",
    "EventsUnavailableError",
    "InsufficientStorageError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "PteroError",
    "RateLimitError",
    "ResponseValidationError",
    "ServerError",
    "TooManyBackupsError",
    "UnprocessableEntityError",
    "UnsupportedOperationError",
    "WaitTimeoutError",
    "bound_text",
    "status_error_class",
]

#: The longest message an error carries, in characters.
MAX_MESSAGE = 4096
#: The longest a ``DownloadError`` attempt's description may be, in characters.
MAX_HISTORY_ENTRY = 512
#: How many attempts a ``DownloadError`` message lists: the first, and the last few.
HISTORY_SHOWN_FIRST = 1
HISTORY_SHOWN_LAST = 4
#: How much of a ``DownloadError`` message comes before its attempts.
_DOWNLOAD_HEAD = 1024


def bound_text(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters; else its start and end, and what was cut.

    The end is kept as well as the start because messages end with what was asked (method and
    URL). The result never exceeds ``limit`` characters.
    """
    if len(text) <= limit:
        return text
    longest = f" … [{len(text):,} characters cut] … "
    if limit <= len(longest):
        return text[:limit]
    keep = limit - len(longest)
    head = keep - keep // 3
    tail = keep - head
    marker = f" … [{len(text) - keep:,} characters cut] … "
    return text[:head] + marker + (text[-tail:] if tail else "")


class PteroError(Exception):
    """Base class of every error the SDK raises.

    Args:
        message: What went wrong; cut to ``MAX_MESSAGE`` (4,096) characters, its start and
            end kept.
    """

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    @property
    def message(self) -> str:
        """What went wrong, in at most ``MAX_MESSAGE`` (4,096) characters."""
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        # Every message goes through here, at construction and on any later rewrite (the
        # transport masks the key in place): no subclass can carry an unbounded text.
        self._message = bound_text(str(value), MAX_MESSAGE)
        self.args = (self._message,)

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(PteroError, ValueError):
    """An argument (server id, backup UUID, name, path, URL, key) is not acceptable."""


class APIConnectionError(PteroError):
    """The panel could not be reached, or the connection broke during the exchange."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """The panel did not answer within the client's ``timeout``."""


class APIStatusError(PteroError):
    """The panel answered with a non-2xx status.

    The class is chosen by the status first, then refined by the panel's ``code``; each
    argument is kept as the attribute of the same name.

    Args:
        message: What was asked and what the panel said, the API key masked.
        status: The HTTP status.
        code: The panel's structured error code (``"TooManyBackupsException"``…), if any.
        detail: The panel's explanation, if any.
        errors: Every entry of the panel's ``errors`` list.
        method: The request's method.
        url: The request's URL.
        headers: The answer's headers.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        detail: str | None = None,
        errors: tuple[ErrorDetail, ...] = (),
        method: str = "",
        url: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.method = method
        self.url = url
        self.headers: Mapping[str, str] = dict(headers or {})


class BadRequestError(APIStatusError):
    """400: the panel refused the operation by its rules."""


class TooManyBackupsError(BadRequestError):
    """400 ``TooManyBackupsException``: the server is at its backup limit (or backups are off)."""


class BackupLockedError(BadRequestError):
    """400 ``BackupLockedException``: a locked, successful backup cannot be deleted."""


class AuthenticationError(APIStatusError):
    """401: the API key is wrong, revoked or missing."""


class PermissionDeniedError(APIStatusError):
    """403: the key lacks a permission, is an application key, or the IP is not allowed."""


class NotFoundError(APIStatusError):
    """404: the server or backup does not exist, or the key cannot see it."""


class ConflictError(APIStatusError):
    """409: the server's state (restoring, installing, suspended…) prevents the operation."""


class UnprocessableEntityError(APIStatusError):
    """422: the panel rejected the request body."""


class RateLimitError(APIStatusError):
    """429: rate limited; ``retry_after`` says how long the panel asked to wait (seconds).

    Raised after the retries, or at once when the panel asks for a wait longer than the
    client's ``max_retry_after``.

    Args:
        message: What was asked and what the panel said.
        retry_after: The panel's ``Retry-After``, in seconds, or None when it sent none.
        **kwargs: The arguments of ``APIStatusError``.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InsufficientStorageError(APIStatusError):
    """507: not enough storage for the backup (reference dialect only)."""


class ServerError(APIStatusError):
    """5xx: the panel or its node failed."""


class BackupStateError(PteroError):
    """The backup is not in a state that allows the operation.

    Args:
        message: What was asked, and the backup's state.
        backup: The backup as last seen, when the SDK looked it up (kept as ``backup``).
    """

    def __init__(self, message: str, *, backup: Backup | None = None) -> None:
        super().__init__(message)
        self.backup = backup


class BackupNotCompletedError(BackupStateError):
    """The backup is still being created."""


class BackupFailedError(BackupStateError):
    """The backup failed on the node and has no archive."""


class UnsupportedOperationError(PteroError):
    """The panel does not offer this operation (for example rename on Pterodactyl)."""


class ResponseValidationError(PteroError):
    """The panel answered something that is not its API: HTML, a redirect, bad JSON, a bad field."""


class WaitTimeoutError(PteroError, TimeoutError):
    """``wait()`` gave up before the backup finished."""


class EventsUnavailableError(PteroError):
    """The node's events cannot be had (no ``websocket.connect``, a refused upgrade, a token
    without ``backup.read``, a socket that keeps failing): ``via="events"`` raises it."""


class DestinationExistsError(PteroError, FileExistsError):
    """The destination file exists and does not match the backup; pass ``overwrite=True``."""


class DownloadError(PteroError):
    """A download could not be completed; ``history`` says what happened on each attempt.

    The message lists the first attempt and the last few.

    Args:
        message: What failed.
        attempts: GETs of a link made before giving up (kept as ``attempts``).
        history: What happened on each attempt, in order, each cut to
            ``MAX_HISTORY_ENTRY`` characters (kept as ``history``).
    """

    def __init__(self, message: str, *, attempts: int = 0, history: tuple[str, ...] = ()) -> None:
        history = tuple(bound_text(str(entry), MAX_HISTORY_ENTRY) for entry in history)
        if history:
            message = bound_text(message, _DOWNLOAD_HEAD) + "\n" + _history_text(history)
        super().__init__(message)
        self.attempts = attempts
        #: What happened on each attempt, in order (each at most ``MAX_HISTORY_ENTRY`` long).
        self.history = history


def _history_text(history: tuple[str, ...]) -> str:
    """The attempts of a download as indented lines: the first ones, the last ones, and how
    many were left out in between."""
    lines = [f"  attempt {i}: {entry}" for i, entry in enumerate(history, 1)]
    if len(lines) <= HISTORY_SHOWN_FIRST + HISTORY_SHOWN_LAST + 1:
        return "\n".join(lines)
    left_out = len(lines) - HISTORY_SHOWN_FIRST - HISTORY_SHOWN_LAST
    first, last = HISTORY_SHOWN_FIRST + 1, len(lines) - HISTORY_SHOWN_LAST
    return "\n".join(
        [
            *lines[:HISTORY_SHOWN_FIRST],
            f"  … attempts {first}-{last} not shown ({left_out:,} more attempts)",
            *lines[-HISTORY_SHOWN_LAST:],
        ]
    )


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not hash to the checksum the panel announced.

    ``download()`` retries a mismatch once from zero before raising it; a stream raises it
    from its last chunk, which is held back.

    Args:
        message: What failed.
        expected: The checksum the panel announced (kept as ``expected``).
        actual: The checksum of the bytes received (kept as ``actual``).
        attempts: GETs of a link made (kept as ``attempts``).
        history: What happened on each attempt (kept as ``history``).
    """

    def __init__(
        self,
        message: str,
        *,
        expected: Checksum,
        actual: Checksum,
        attempts: int = 0,
        history: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, attempts=attempts, history=history)
        self.expected = expected
        self.actual = actual


class _BackupNotCompletedStatusError(BadRequestError, BackupNotCompletedError):
    """400 ``BackupNotCompletedException`` from the panel."""


class _BackupFailedStatusError(BadRequestError, BackupFailedError):
    """400 ``BackupFailedException`` from the panel."""


_BY_CODE: dict[str, type[APIStatusError]] = {
    "TooManyBackupsException": TooManyBackupsError,
    "BackupLockedException": BackupLockedError,
    "BackupIsLockedException": BackupLockedError,
    "BackupNotCompletedException": _BackupNotCompletedStatusError,
    "BackupFailedException": _BackupFailedStatusError,
}

_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    507: InsufficientStorageError,
}


def status_error_class(status: int, code: str | None) -> type[APIStatusError]:
    """The class for a non-2xx ``status``: by status first, refined by the panel's ``code``."""
    base = _BY_STATUS.get(status)
    if base is None:
        base = ServerError if status >= 500 else APIStatusError
    refined = _BY_CODE.get(code or "")
    if refined is not None and issubclass(refined, base):
        return refined
    return base
