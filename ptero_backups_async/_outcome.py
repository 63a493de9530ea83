"""``DownloadOutcome``: a result or an error, per target of ``download_many``.

Its own module because it joins the two leaves: the models and the errors.
"""

from __future__ import annotations

from attrs import frozen

from ._errors import PteroError
from ._models import DownloadResult

__all__ = ["DownloadOutcome"]


@frozen
class DownloadOutcome:
    """The outcome of one target of ``download_many``: a result or an error.

    Attributes:
        server: The target's server, as validated.
        backup_uuid: The target's backup.
        result: The download's result when it produced a file (or found a verified one);
            None when it failed.
        error: What stopped the download when it failed (always a ``PteroError``: anything
            else is wrapped in ``DownloadError``); None when it succeeded.
    """

    server: str
    backup_uuid: str
    result: DownloadResult | None = None
    error: PteroError | None = None

    @property
    def ok(self) -> bool:
        """True when the download produced a file (``result`` is set, ``error`` is None)."""
        return self.result is not None
