"""What a sync did, as plain data: per-server mirrors, entries left out, and the totals.

A leaf like ``_context``: the sync fills these in, the render modules show them.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from .._models import Backup
from .._outcome import DownloadOutcome
from ._shard import Shard

__all__ = ["MANIFEST", "Rejected", "ServerSync", "SyncReport"]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Rejected:
    """An entry of the panel's listing that cannot be acted on (an id the SDK refuses).

    ``server`` and ``uuid`` are exactly what the panel sent; ``uuid`` is None when the server
    itself is the rejected entry. It is reported and left out; the rest of the job goes on.
    """

    server: str
    uuid: str | None
    reason: str


@dataclass
class ServerSync:
    """The mirror of one server: its completed backups and what happened to each."""

    server: str
    directory: pathlib.Path
    backups: list[Backup]
    #: Completed backups of the listing that could not be synced (an unusable UUID).
    rejected: list[Rejected] = field(default_factory=list)
    outcomes: list[DownloadOutcome] = field(default_factory=list)

    @property
    def manifest(self) -> pathlib.Path:
        """Where the manifest is written."""
        return self.directory / MANIFEST


@dataclass
class SyncReport:
    """What a sync did, over all servers."""

    dest: pathlib.Path
    servers: list[ServerSync]
    seconds: float = 0.0
    #: Servers of the listing that could not be synced at all (an unusable id).
    rejected_servers: list[Rejected] = field(default_factory=list)
    #: With ``sync --shard``, the share synced here; None syncs every server.
    shard: Shard | None = None
    #: Servers left to the other shards.
    elsewhere: int = 0

    @property
    def rejected(self) -> list[Rejected]:
        """Every entry left out: servers first, then backups, server by server."""
        return [*self.rejected_servers, *(r for s in self.servers for r in s.rejected)]

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
