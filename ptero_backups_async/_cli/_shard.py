"""``sync --shard K/N``: a stable share of the servers, so N machines split a fleet.

Each server goes to one shard by a hash of its short id (the first 8 characters of its UUID,
which the panel's listing and a UUID on the command line share). Every machine computes the
same split from the same listing, so N processes cover the fleet exactly once without talking
to one another. The hash is Lamping and Veach's jump consistent hash: going from N to N + 1
shards moves only about 1/(N + 1) of the servers, so most mirrors stay where they are.
"""

from __future__ import annotations

import hashlib
import re

from attrs import frozen

__all__ = ["MAX_SHARDS", "Shard", "parse_shard", "shard_of"]

#: The most shards a fleet can be split into.
MAX_SHARDS = 10_000

_SHARD = re.compile(r"(\d{1,6})/(\d{1,6})")
_MASK = (1 << 64) - 1


def shard_of(server: str, count: int) -> int:
    """The shard (0 to ``count`` - 1) that owns ``server``, by its short id."""
    if count < 1:
        raise ValueError(f"count must be ≥ 1, not {count}")
    key = int.from_bytes(hashlib.sha256(server[:8].lower().encode()).digest()[:8], "big")
    bucket, jump = -1, 0
    while jump < count:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & _MASK
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


@frozen
class Shard:
    """Shard ``index`` of ``count``: 0-based, as a Kubernetes completion index."""

    index: int
    count: int

    def owns(self, server: str) -> bool:
        """True when ``server`` (a short id or a UUID) belongs to this shard."""
        return shard_of(server, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a ``Shard``; ``ValueError`` naming what is wrong."""
    match = _SHARD.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected K/N, such as 0/4 (shard K of N, K from 0), not {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"N must be 1 to {MAX_SHARDS}, not {count}")
    if index >= count:
        raise ValueError(f"K must be 0 to {count - 1} for {count} shards, not {index}")
    return Shard(index, count)
