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
    ├── DestinationExistsError (also a FileExistsError)
    └── DownloadError                      .attempts, .history
        └── ChecksumMismatchError          .expected, .actual

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
    "status_error_class",
]


class PteroError(Exception):
    """Base class of every error the SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(PteroError, ValueError):
    """An argument (server id, backup UUID, name, path, URL, key) is not acceptable."""


class APIConnectionError(PteroError):
    """The panel could not be reached, or the connection broke during the exchange."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """The panel did not answer within the client's ``timeout``."""


class APIStatusError(PteroError):
    """The panel answered with a non-2xx status."""

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
    """429: rate limited; ``retry_after`` says how long the panel asked to wait (seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InsufficientStorageError(APIStatusError):
    """507: not enough storage for the backup (reference dialect only)."""


class ServerError(APIStatusError):
    """5xx: the panel or its node failed."""


class BackupStateError(PteroError):
    """The backup is not in a state that allows the operation."""

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


class DestinationExistsError(PteroError, FileExistsError):
    """The destination file exists and does not match the backup; pass ``overwrite=True``."""


class DownloadError(PteroError):
    """A download could not be completed; ``history`` says what happened on each attempt."""

    def __init__(self, message: str, *, attempts: int = 0, history: tuple[str, ...] = ()) -> None:
        if history:
            message += "\n" + "\n".join(f"  attempt {i}: {h}" for i, h in enumerate(history, 1))
        super().__init__(message)
        self.attempts = attempts
        self.history = history


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not hash to the checksum the panel announced."""

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
