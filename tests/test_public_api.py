"""The package root exports exactly the contract of the public-API spec (and more)."""

from __future__ import annotations

import pathlib
import re

import pytest

import ptero_backups_async
from ptero_backups_async import (
    APITimeoutError,
    DestinationExistsError,
    InvalidArgumentError,
    PteroError,
    WaitTimeoutError,
)

SPEC = pathlib.Path(__file__).parents[1].parent / "shared" / "spec" / "public-api.md"

CONTRACT = {
    "PteroClient",
    "BackupsResource",
    "Backup",
    "BackupState",
    "Checksum",
    "Server",
    "Page",
    "RateLimit",
    "DownloadProgress",
    "DownloadResult",
    "DownloadOutcome",
    "ErrorDetail",
    "PteroError",
    "APIConnectionError",
    "APITimeoutError",
    "APIStatusError",
    "BadRequestError",
    "TooManyBackupsError",
    "BackupLockedError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InsufficientStorageError",
    "ServerError",
    "BackupStateError",
    "BackupNotCompletedError",
    "BackupFailedError",
    "ResponseValidationError",
    "WaitTimeoutError",
    "DestinationExistsError",
    "DownloadError",
    "ChecksumMismatchError",
}


def test_all_holds_the_contract() -> None:
    exported = set(ptero_backups_async.__all__)
    assert CONTRACT <= exported
    assert ptero_backups_async.__all__ == sorted(ptero_backups_async.__all__)
    for name in exported:
        assert getattr(ptero_backups_async, name) is not None


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not beside the checkout")
def test_every_error_of_the_spec_tree_is_exported() -> None:
    tree = SPEC.read_text().split("## Errors", 1)[1].split("##", 1)[0]
    names = set(re.findall(r"[├└]── (\w+)", tree)) | {"PteroError"}
    assert names <= set(ptero_backups_async.__all__)


def test_error_hierarchy_extras() -> None:
    assert issubclass(APITimeoutError, TimeoutError)
    assert issubclass(WaitTimeoutError, TimeoutError)
    assert issubclass(WaitTimeoutError, PteroError)
    assert issubclass(DestinationExistsError, FileExistsError)
    assert issubclass(InvalidArgumentError, ValueError)
    for name in ptero_backups_async.__all__:
        obj = getattr(ptero_backups_async, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, PteroError), name
        if isinstance(obj, type):
            assert obj.__doc__, f"{name} has no docstring"
